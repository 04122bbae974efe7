package server

import (
	"github.com/hashicorp/go-memdb"
)

// Table names of the state store.
const (
	tableIndex  = "index"
	tableNodes  = "nodes"
	tableJobs   = "jobs"
	tableAllocs = "allocs"
)

// indexEntry records the raft-style index at which a table last changed.
type indexEntry struct {
	Key   string
	Value uint64
}

// stateSchema is the go-memdb schema of the server state.
func stateSchema() *memdb.DBSchema {
	schema := &memdb.DBSchema{
		Tables: map[string]*memdb.TableSchema{
			tableEvals: evalsTableSchema(),
			tableIndex: {
				Name: tableIndex,
				Indexes: map[string]*memdb.IndexSchema{
					"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Key"}},
				},
			},
			tableNodes: {
				Name: tableNodes,
				Indexes: map[string]*memdb.IndexSchema{
					"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
				},
			},
			tableJobs: {
				Name: tableJobs,
				Indexes: map[string]*memdb.IndexSchema{
					"id": {Name: "id", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
						&memdb.StringFieldIndex{Field: "Namespace"},
						&memdb.StringFieldIndex{Field: "ID"},
					}}},
				},
			},
			tableAllocs: {
				Name: tableAllocs,
				Indexes: map[string]*memdb.IndexSchema{
					"id":   {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
					"node": {Name: "node", Indexer: &memdb.StringFieldIndex{Field: "NodeID"}},
					"job": {Name: "job", Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
						&memdb.StringFieldIndex{Field: "Namespace"},
						&memdb.StringFieldIndex{Field: "JobID"},
					}}},
				},
			},
		},
	}
	for name, t := range aclTableSchemas() {
		schema.Tables[name] = t
	}
	schema.Tables[tableOneTimeTokens] = oneTimeTokenTableSchema()
	schema.Tables[tableRootKeys] = rootKeyTableSchema()
	schema.Tables[tableScalingEvents] = scalingEventsTableSchema()
	return schema
}
