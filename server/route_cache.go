package server

import (
	"context"
	"errors"
	"hash/maphash"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"

	"tether/structs"
)

// routeCacheShards splits the route cache so that calls to different
// nodes do not meet on one lock: every forwarded call to a node whose
// session is on a peer reads it.
const routeCacheShards = 32

// routeCache remembers where a node's session is when it is not here: the
// RPC address of the peer that holds it (for RouteCacheTTL), or that no
// alive server holds one (for NoPathCacheTTL, so that calls to a node that
// is gone do not each ask every peer). Each shard is a bounded LRU, so
// the cache never grows past its size whatever the fleet; concurrent
// lookups of one node share a single peer query (lookups). The zero value
// is not usable; call newRouteCache.
type routeCache struct {
	seed   maphash.Seed
	shards [routeCacheShards]*lru.Cache[string, routeEntry]

	// ttl and noPathTTL are how long a found route and a "no path" are
	// kept.
	ttl, noPathTTL time.Duration

	// ask finds the peer holding nodeID's session among the alive peers
	// but skip (Server.askPeers), or answers ErrNoPathToNode.
	ask func(nodeID, skip string) (string, error)

	// now is the clock.
	now func() time.Time

	// lookups merges concurrent peer queries for the same node.
	lookups singleflight.Group

	// Counters, for Stats and tests.
	hits    atomic.Uint64 // peer routes answered from the cache
	misses  atomic.Uint64 // "no path" answered from the cache
	merged  atomic.Uint64 // lookups that waited on another caller's query
	expired atomic.Uint64 // entries found past their time
}

// routeEntry is one cached answer: addr == "" records "no path".
type routeEntry struct {
	addr    string
	expires time.Time
}

// newRouteCache returns a cache of at most size entries in all that asks
// ask on a miss; now nil means time.Now.
func newRouteCache(size int, ttl, noPathTTL time.Duration, ask func(nodeID, skip string) (string, error), now func() time.Time) *routeCache {
	if now == nil {
		now = time.Now
	}
	per := size / routeCacheShards
	if per < 16 {
		per = 16
	}
	c := &routeCache{seed: maphash.MakeSeed(), ttl: ttl, noPathTTL: noPathTTL, ask: ask, now: now}
	for i := range c.shards {
		l, err := lru.New[string, routeEntry](per)
		if err != nil {
			panic(err) // only for a size <= 0, which per rules out
		}
		c.shards[i] = l
	}
	return c
}

func (c *routeCache) shard(nodeID string) *lru.Cache[string, routeEntry] {
	return c.shards[maphash.String(c.seed, nodeID)%routeCacheShards]
}

// get returns the cached answer for nodeID: ok false when there is none
// (or it expired); addr "" with ok true is a cached "no path".
func (c *routeCache) get(nodeID string) (addr string, ok bool) {
	sh := c.shard(nodeID)
	e, ok := sh.Get(nodeID)
	if !ok {
		return "", false
	}
	if !c.now().Before(e.expires) {
		sh.Remove(nodeID)
		c.expired.Add(1)
		return "", false
	}
	if e.addr == "" {
		c.misses.Add(1)
	} else {
		c.hits.Add(1)
	}
	return e.addr, true
}

// put records an answer for ttl; addr "" records "no path". A ttl <= 0
// records nothing.
func (c *routeCache) put(nodeID, addr string, ttl time.Duration) {
	if ttl <= 0 {
		return
	}
	c.shard(nodeID).Add(nodeID, routeEntry{addr: addr, expires: c.now().Add(ttl)})
}

// drop forgets nodeID.
func (c *routeCache) drop(nodeID string) { c.shard(nodeID).Remove(nodeID) }

// dropVia forgets every route through the peer at addr: membership saw it
// fail or leave, and a call sent there could only wait for the peer's
// session to time out (a frozen or partitioned server accepts TCP and
// answers nothing). Rare, so a walk of every shard is fine.
func (c *routeCache) dropVia(addr string) int {
	n := 0
	for _, sh := range c.shards {
		for _, id := range sh.Keys() {
			if e, ok := sh.Peek(id); ok && e.addr == addr {
				sh.Remove(id)
				n++
			}
		}
	}
	return n
}

// len returns how many entries are cached (expired ones included until
// they are next read or pushed out).
func (c *routeCache) len() int {
	n := 0
	for _, sh := range c.shards {
		n += sh.Len()
	}
	return n
}

// locate returns the RPC address of the peer holding nodeID's session:
// from the cache unless fresh, else by asking (c.ask) the alive peers but
// skip. It answers ErrNoPathToNode when none holds one.
//
// Concurrent lookups of one node with the same freshness and skip share
// one query. The query does not run on any caller's context (ask bounds
// itself), so that a caller that gives up does not fail the others; each
// caller stops waiting when its own context ends.
func (c *routeCache) locate(ctx context.Context, nodeID string, fresh bool, skip string) (string, error) {
	if !fresh {
		if addr, err, ok := c.cached(nodeID, skip); ok {
			return addr, err
		}
	}
	key := nodeID + "|" + skip
	if fresh {
		key += "|fresh"
	}
	ch := c.lookups.DoChan(key, func() (any, error) {
		if !fresh {
			// A caller that missed the cache just before another's
			// query ended finds that query's answer here.
			if addr, err, ok := c.cached(nodeID, skip); ok {
				return addr, err
			}
		}
		addr, err := c.ask(nodeID, skip)
		switch {
		case err == nil:
			c.put(nodeID, addr, c.ttl)
		case errors.Is(err, structs.ErrNoPathToNode) && !isUnansweredMiss(err):
			c.put(nodeID, "", c.noPathTTL)
		}
		return addr, err
	})
	select {
	case res := <-ch:
		if res.Shared {
			c.merged.Add(1)
		}
		if res.Err != nil {
			return "", res.Err
		}
		return res.Val.(string), nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// cached answers locate from the cache: ok false when it has nothing for
// nodeID, or only the holder skip.
func (c *routeCache) cached(nodeID, skip string) (addr string, err error, ok bool) {
	addr, ok = c.get(nodeID)
	switch {
	case !ok || addr != "" && addr == skip:
		return "", nil, false
	case addr == "":
		return "", structs.ErrNoPathToNode, true
	}
	return addr, nil, true
}
