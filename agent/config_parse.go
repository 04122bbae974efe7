package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl"
	"github.com/hashicorp/hcl/hcl/ast"
	"github.com/hashicorp/hcl/hcl/token"
)

// LoadConfig loads one file, or every *.hcl and *.json file in a directory
// (sorted by name, merged in order; hidden files and subdirectories are
// skipped). The files are Nomad agent configuration, in HCL or its JSON
// form.
//
// The returned Config holds only what the files set (see Config). The
// warnings name each Nomad key that Tether accepts but does not implement,
// with its file and line. A key that Nomad does not know either, a value of
// the wrong type, or a malformed duration is an error naming the file, the
// line and the key.
func LoadConfig(path string) (*Config, []string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, fmt.Errorf("load config: %w", err)
	}
	if !fi.IsDir() {
		return loadConfigFile(path)
	}

	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, nil, fmt.Errorf("load config dir: %w", err)
	}
	result := &Config{}
	var warnings []string
	for _, e := range entries { // os.ReadDir sorts by name.
		name := e.Name()
		if e.IsDir() || strings.HasPrefix(name, ".") {
			continue
		}
		if ext := strings.ToLower(filepath.Ext(name)); ext != ".hcl" && ext != ".json" {
			continue
		}
		cfg, w, err := loadConfigFile(filepath.Join(path, name))
		warnings = append(warnings, w...)
		if err != nil {
			return nil, warnings, err
		}
		result = result.Merge(cfg)
	}
	return result, warnings, nil
}

// loadConfigFile parses one HCL or JSON file.
func loadConfigFile(path string) (*Config, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("load config: %w", err)
	}
	file, err := hcl.ParseBytes(data)
	if err != nil {
		return nil, nil, fmt.Errorf("parse %s: %w", path, err)
	}
	p := &parser{path: path}
	cfg := &Config{Files: []string{path}}
	var items []*ast.ObjectItem
	switch n := file.Node.(type) {
	case *ast.ObjectList:
		items = n.Items
	case nil:
	default:
		return nil, nil, fmt.Errorf("parse %s: the file is not an object", path)
	}
	if err := p.parseRoot(items, cfg); err != nil {
		return nil, p.warnings, err
	}
	return cfg, p.warnings, nil
}

// Keys that Nomad knows and Tether accepts but ignores, with a warning.
// Keys are lower case; lookups fold the case as HCL decoding does.
var (
	ignoredTopLevel = keySet(
		"addresses", "leave_on_interrupt", "leave_on_terminate",
		"enable_syslog", "syslog_facility", "disable_update_check",
		"disable_anonymous_signature",
		"http_api_response_headers", "log_file", "log_rotate_bytes",
		"log_rotate_duration", "log_rotate_max_files", "log_include_location",
		"plugin_dir", "consul", "vault", "audit",
		"autopilot", "sentinel", "reporting", "keyring",
	)
	ignoredServer = keySet(
		"encrypt", "raft_protocol", "raft_multiplier", "protocol_version",
		"node_gc_threshold", "job_gc_interval", "job_gc_threshold",
		"eval_gc_threshold", "batch_eval_gc_threshold",
		"deployment_gc_threshold", "csi_volume_claim_gc_interval",
		"csi_volume_claim_gc_threshold", "csi_plugin_gc_threshold",
		"acl_token_gc_threshold", "root_key_gc_interval",
		"root_key_gc_threshold", "root_key_rotation_threshold",
		"default_scheduler_config", "license_path", "authoritative_region",
		"rejoin_after_leave", "non_voting_server", "redundancy_zone",
		"upgrade_version", "plan_rejection_tracker",
		"enabled_schedulers", "oidc_issuer", "data_dir",
		"raft_boltdb", "search", "job_max_priority",
		"job_default_priority", "job_tracked_versions",
		"deployment_query_rate_limit", "event_buffer_size", "retry_max",
		"retry_interval",
	)
	ignoredServerJoin = keySet("retry_max", "retry_interval")
	ignoredLimits     = keySet("https_handshake_timeout", "http_max_conns_per_client", "rpc_handshake_timeout")
	ignoredClient     = keySet(
		"options", "reserved", "host_volume", "host_network", "chroot_env",
		"drain_on_shutdown", "artifact", "template", "cni_path",
		"cni_config_dir", "bridge_network_name", "bridge_network_subnet",
		"bridge_network_subnet_ipv6", "bridge_network_hairpin_mode",
		"max_kill_timeout", "disable_remote_exec", "gc_disk_usage_threshold",
		"gc_inode_usage_threshold", "gc_max_allocs", "gc_parallel_destroys",
		"gc_volumes_on_node_gc", "no_host_uuid", "cgroup_parent",
		"memory_total_mb", "disk_total_mb", "disk_free_mb", "network_speed",
		"min_dynamic_port", "max_dynamic_port", "preferred_address_family",
		"fingerprint", "node_max_allocs", "host_volumes_dir",
		"alloc_mounts_dir", "common_plugin_dir", "nomad_service_discovery",
	)
	ignoredACL = keySet(
		"replication_token", "token_min_expiration_ttl",
		"token_max_expiration_ttl", "role_ttl",
	)
	ignoredTLS    = keySet("tls_prefer_server_cipher_suites")
	ignoredPlugin = keySet("args")
)

func keySet(keys ...string) map[string]bool {
	m := make(map[string]bool, len(keys))
	for _, k := range keys {
		m[k] = true
	}
	return m
}

// parser walks the HCL AST of one file. It keeps the path as given, for
// messages, and collects warnings.
type parser struct {
	path     string
	warnings []string
}

// field decodes one key of a block. path is the dotted key ("server.enabled").
type field func(it *ast.ObjectItem, path string) error

// block describes the keys a block accepts.
type block struct {
	// path is the dotted name of the block ("server.server_join"), empty
	// at the top level.
	path string

	// label names the block in errors when it differs from path
	// (`plugin "raw_exec"`).
	label   string
	fields  map[string]field
	ignored map[string]bool
}

// parse dispatches every item to its field, warns about ignored keys, and
// fails on unknown ones.
func (p *parser) parse(items []*ast.ObjectItem, b block) error {
	for _, it := range items {
		key, err := p.key(it)
		if err != nil {
			return err
		}
		path := key
		if b.path != "" {
			path = b.path + "." + key
		}
		lower := strings.ToLower(key)
		if f, ok := b.fields[lower]; ok {
			if err := f(it, path); err != nil {
				return err
			}
			continue
		}
		if b.ignored[lower] {
			p.warnings = append(p.warnings, fmt.Sprintf(
				"config key %q (%s:%d) is not implemented by Tether and is ignored",
				path, p.path, line(it)))
			continue
		}
		where := ""
		switch {
		case b.label != "":
			where = " in " + b.label + " block"
		case b.path != "":
			where = " in " + b.path + " block"
		}
		return fmt.Errorf("%s:%d: unknown config key %q%s", p.path, line(it), key, where)
	}
	return nil
}

// parseRoot decodes the top level of a file into c.
func (p *parser) parseRoot(items []*ast.ObjectItem, c *Config) error {
	return p.parse(items, block{
		fields: map[string]field{
			"name":         p.stringField(&c.Name),
			"datacenter":   p.stringField(&c.Datacenter),
			"region":       p.stringField(&c.Region),
			"data_dir":     p.stringField(&c.DataDir),
			"bind_addr":    p.stringField(&c.BindAddr),
			"log_level":    p.stringField(&c.LogLevel),
			"log_json":     p.boolField(&c.LogJSON),
			"enable_debug": p.boolField(&c.EnableDebug),
			// Tether's own: Nomad has no such key.
			"gomaxprocs_governor": p.boolField(&c.GOMAXPROCSGovernor),
			"advertise":           p.blockField(p.advertiseBlock(&c.Advertise)),
			"ports":               p.blockField(p.portsBlock(&c.Ports)),
			"server":              p.blockField(p.serverBlock(&c.Server)),
			"client":              p.blockField(p.clientBlock(&c.Client)),
			"acl":                 p.blockField(p.aclBlock(&c.ACL)),
			"tls":                 p.blockField(p.tlsBlock(&c.TLS)),
			"limits":              p.blockField(p.limitsBlock(&c.Limits)),
			"telemetry":           p.blockField(p.telemetryBlock(&c.Telemetry)),
			"ui":                  p.blockField(p.uiBlock(&c.UI)),
			"plugin": func(it *ast.ObjectItem, path string) error {
				return p.parsePlugins(it, path, c)
			},
		},
		ignored: ignoredTopLevel,
	})
}

func (p *parser) advertiseBlock(a *AdvertiseConfig) block {
	return block{path: "advertise", fields: map[string]field{
		"http": p.stringField(&a.HTTP),
		"rpc":  p.stringField(&a.RPC),
		"serf": p.stringField(&a.Serf),
	}}
}

func (p *parser) portsBlock(ports *PortsConfig) block {
	return block{path: "ports", fields: map[string]field{
		"http": p.intField(&ports.HTTP),
		"rpc":  p.intField(&ports.RPC),
		"serf": p.intField(&ports.Serf),
	}}
}

func (p *parser) serverBlock(s *ServerConfig) block {
	return block{
		path: "server",
		fields: map[string]field{
			"enabled":                   p.boolField(&s.Enabled),
			"bootstrap_expect":          p.intField(&s.BootstrapExpect),
			"server_join":               p.blockField(p.joinBlock("server.server_join", &s.RetryJoin, &s.StartJoin)),
			"retry_join":                p.appendListField(&s.RetryJoin),
			"start_join":                p.appendListField(&s.StartJoin),
			"heartbeat_grace":           p.durationField(&s.HeartbeatGrace),
			"min_heartbeat_ttl":         p.durationField(&s.MinHeartbeatTTL),
			"max_heartbeats_per_second": p.intField(&s.MaxHeartbeatsPerSecond),
			"failover_heartbeat_ttl":    p.durationField(&s.FailoverHeartbeatTTL),
			"num_schedulers":            p.intField(&s.NumSchedulers),
			"raft_snapshot_threshold":   p.intField(&s.RaftSnapshotThreshold),
			"raft_snapshot_interval":    p.durationField(&s.RaftSnapshotInterval),
			"raft_trailing_logs":        p.intField(&s.RaftTrailingLogs),
		},
		ignored: ignoredServer,
	}
}

// joinBlock is a server_join block; both of its lists append to the given
// slices, so a legacy retry_join in the same file adds to them.
func (p *parser) joinBlock(path string, retry, start *[]string) block {
	return block{
		path: path,
		fields: map[string]field{
			"retry_join": p.appendListField(retry),
			"start_join": p.appendListField(start),
		},
		ignored: ignoredServerJoin,
	}
}

func (p *parser) clientBlock(c *ClientConfig) block {
	return block{
		path: "client",
		fields: map[string]field{
			"enabled": p.boolField(&c.Enabled),
			"servers": p.appendListField(&c.Servers),
			// A Nomad client's server_join lists server RPC addresses,
			// the same as servers.
			"server_join":       p.blockField(p.joinBlock("client.server_join", &c.Servers, &c.Servers)),
			"meta":              p.metaField(&c.Meta),
			"state_dir":         p.stringField(&c.StateDir),
			"alloc_dir":         p.stringField(&c.AllocDir),
			"node_class":        p.stringField(&c.NodeClass),
			"node_pool":         p.stringField(&c.NodePool),
			"network_interface": p.stringField(&c.NetworkInterface),
			"cpu_total_compute": p.intField(&c.CPUTotalCompute),
			"gc_interval":       p.durationField(&c.GCInterval),
		},
		ignored: ignoredClient,
	}
}

func (p *parser) limitsBlock(l *LimitsConfig) block {
	return block{
		path: "limits",
		fields: map[string]field{
			"rpc_max_conns_per_client": p.intField(&l.RPCMaxConnsPerClient),
			"rpc_keepalive_interval":   p.durationField(&l.RPCKeepAliveInterval),
			"rpc_keepalive_timeout":    p.durationField(&l.RPCKeepAliveTimeout),
		},
		ignored: ignoredLimits,
	}
}

func (p *parser) uiBlock(u *UIConfig) block {
	return block{
		path: "ui",
		fields: map[string]field{
			"enabled": func(it *ast.ObjectItem, path string) error {
				var b bool
				if err := p.boolField(&b)(it, path); err != nil {
					return err
				}
				u.Enabled = &b
				return nil
			},
		},
		ignored: keySet("consul", "vault", "label", "content_security_policy", "show_cli_hints"),
	}
}

func (p *parser) aclBlock(a *ACLConfig) block {
	return block{
		path: "acl",
		fields: map[string]field{
			"enabled":    p.boolField(&a.Enabled),
			"token_ttl":  p.durationField(&a.TokenTTL),
			"policy_ttl": p.durationField(&a.PolicyTTL),
		},
		ignored: ignoredACL,
	}
}

func (p *parser) tlsBlock(t *TLSConfig) block {
	return block{
		path: "tls",
		fields: map[string]field{
			"http":                   p.boolField(&t.HTTP),
			"rpc":                    p.boolField(&t.RPC),
			"ca_file":                p.stringField(&t.CAFile),
			"cert_file":              p.stringField(&t.CertFile),
			"key_file":               p.stringField(&t.KeyFile),
			"verify_server_hostname": p.boolField(&t.VerifyServerHostname),
			"verify_https_client":    p.boolField(&t.VerifyHTTPSClient),
			"rpc_upgrade_mode":       p.boolField(&t.RPCUpgradeMode),
			"tls_min_version":        p.stringField(&t.TLSMinVersion),
			"tls_cipher_suites":      p.stringField(&t.TLSCipherSuites),
		},
		ignored: ignoredTLS,
	}
}

// parsePlugins decodes plugin "NAME" { config { ... } }. The item holds one
// or more labelled plugin bodies (several in the JSON form).
func (p *parser) parsePlugins(it *ast.ObjectItem, path string, c *Config) error {
	labelled, err := p.children(it, path)
	if err != nil {
		return err
	}
	for _, li := range labelled {
		name, err := p.key(li)
		if err != nil {
			return err
		}
		pc := &PluginConfig{Name: name}
		err = p.blockField(block{
			path:  path + "." + name,
			label: fmt.Sprintf("%s %q", path, name),
			fields: map[string]field{
				"config": func(ci *ast.ObjectItem, cpath string) error {
					m, err := p.decodeMap(ci, cpath)
					if err != nil {
						return err
					}
					if pc.Config == nil {
						pc.Config = m
					} else {
						for k, v := range m {
							pc.Config[k] = v
						}
					}
					return nil
				},
			},
			ignored: ignoredPlugin,
		})(li, path+"."+name)
		if err != nil {
			return err
		}
		if c.Plugins == nil {
			c.Plugins = make(map[string]*PluginConfig)
		}
		c.Plugins[name] = c.Plugins[name].merge(pc)
	}
	return nil
}

// decodeMap decodes a free-form block (a plugin's config) with HCL's own
// decoder.
func (p *parser) decodeMap(it *ast.ObjectItem, path string) (map[string]any, error) {
	items, err := p.children(it, path)
	if err != nil {
		return nil, err
	}
	m := map[string]any{}
	if err := hcl.DecodeObject(&m, &ast.ObjectList{Items: items}); err != nil {
		return nil, fmt.Errorf("%s:%d: %s: %w", p.path, line(it), path, err)
	}
	return m, nil
}

// key returns the first key of an item.
func (p *parser) key(it *ast.ObjectItem) (string, error) {
	if len(it.Keys) == 0 {
		return "", fmt.Errorf("%s:%d: expected a key", p.path, line(it))
	}
	s, ok := it.Keys[0].Token.Value().(string)
	if !ok {
		return "", fmt.Errorf("%s:%d: invalid key %s", p.path, line(it), it.Keys[0].Token.Text)
	}
	return s, nil
}

// line returns the line of an item's key. The JSON parser of HCL v1 keeps
// no position on keys, only on the colon, so that is the fallback.
func line(it *ast.ObjectItem) int {
	if l := it.Pos().Line; l > 0 {
		return l
	}
	return it.Assign.Line
}

// children returns the items inside a block item. It accepts every shape
// HCL v1 produces for a block: "key { ... }", "key = { ... }", labelled
// blocks ("key "label" { ... }", whose extra keys become a nested item), and
// the JSON forms, where a block may be a list of objects and nested objects
// may have been flattened into one item with several keys.
func (p *parser) children(it *ast.ObjectItem, path string) ([]*ast.ObjectItem, error) {
	if len(it.Keys) > 1 {
		return []*ast.ObjectItem{{Keys: it.Keys[1:], Assign: it.Assign, Val: it.Val}}, nil
	}
	switch v := it.Val.(type) {
	case *ast.ObjectType:
		return v.List.Items, nil
	case *ast.ListType:
		var items []*ast.ObjectItem
		for _, e := range v.List {
			o, ok := e.(*ast.ObjectType)
			if !ok {
				return nil, p.typeError(it, path, "a block", e)
			}
			items = append(items, o.List.Items...)
		}
		return items, nil
	default:
		return nil, p.typeError(it, path, "a block", it.Val)
	}
}

// literal returns the single value of an attribute.
func (p *parser) literal(it *ast.ObjectItem, path, want string) (*ast.LiteralType, error) {
	if len(it.Keys) > 1 {
		return nil, p.typeError(it, path, want, it.Val)
	}
	lit, ok := it.Val.(*ast.LiteralType)
	if !ok {
		return nil, p.typeError(it, path, want, it.Val)
	}
	return lit, nil
}

// typeError reports a value of the wrong kind.
func (p *parser) typeError(it *ast.ObjectItem, path, want string, got ast.Node) error {
	return fmt.Errorf("%s:%d: %s: expected %s, got %s", p.path, line(it), path, want, describe(got))
}

// describe names the kind of an AST value for error messages.
func describe(n ast.Node) string {
	switch v := n.(type) {
	case *ast.ObjectType:
		return "a block"
	case *ast.ListType:
		return "a list"
	case *ast.LiteralType:
		switch v.Token.Type {
		case token.STRING, token.HEREDOC:
			return fmt.Sprintf("string %s", v.Token.Text)
		case token.NUMBER, token.FLOAT:
			return "number " + v.Token.Text
		case token.BOOL:
			return "bool " + v.Token.Text
		}
		return v.Token.Text
	default:
		return fmt.Sprintf("%T", n)
	}
}

// stringValue decodes a string (or heredoc) attribute.
func (p *parser) stringValue(it *ast.ObjectItem, path string) (string, error) {
	lit, err := p.literal(it, path, "a string")
	if err != nil {
		return "", err
	}
	switch lit.Token.Type {
	case token.STRING, token.HEREDOC:
		s, _ := lit.Token.Value().(string)
		return s, nil
	default:
		return "", p.typeError(it, path, "a string", lit)
	}
}

func (p *parser) stringField(dst *string) field {
	return func(it *ast.ObjectItem, path string) error {
		v, err := p.stringValue(it, path)
		if err == nil {
			*dst = v
		}
		return err
	}
}

func (p *parser) boolField(dst *bool) field {
	return func(it *ast.ObjectItem, path string) error {
		lit, err := p.literal(it, path, "a bool")
		if err != nil {
			return err
		}
		switch lit.Token.Type {
		case token.BOOL:
			*dst = lit.Token.Value().(bool)
			return nil
		case token.STRING:
			b, err := strconv.ParseBool(lit.Token.Value().(string))
			if err != nil {
				return fmt.Errorf("%s:%d: %s: expected a bool, got string %s", p.path, line(it), path, lit.Token.Text)
			}
			*dst = b
			return nil
		default:
			return p.typeError(it, path, "a bool", lit)
		}
	}
}

func (p *parser) intField(dst *int) field {
	return func(it *ast.ObjectItem, path string) error {
		lit, err := p.literal(it, path, "a whole number")
		if err != nil {
			return err
		}
		var text string
		switch lit.Token.Type {
		case token.NUMBER:
			text = lit.Token.Text
		case token.STRING:
			text = lit.Token.Value().(string)
		default:
			return p.typeError(it, path, "a whole number", lit)
		}
		n, err := strconv.ParseInt(text, 0, strconv.IntSize)
		if err != nil {
			return fmt.Errorf("%s:%d: %s: expected a whole number, got %s: %w", p.path, line(it), path, lit.Token.Text, err)
		}
		*dst = int(n)
		return nil
	}
}

func (p *parser) durationField(dst *time.Duration) field {
	return func(it *ast.ObjectItem, path string) error {
		lit, err := p.literal(it, path, `a duration such as "30s"`)
		if err != nil {
			return err
		}
		if lit.Token.Type != token.STRING {
			return p.typeError(it, path, `a duration such as "30s"`, lit)
		}
		d, err := time.ParseDuration(lit.Token.Value().(string))
		if err != nil {
			return fmt.Errorf("%s:%d: %s: invalid duration: %w", p.path, line(it), path, err)
		}
		*dst = d
		return nil
	}
}

// appendListField decodes a list of strings and appends it to dst.
func (p *parser) appendListField(dst *[]string) field {
	return func(it *ast.ObjectItem, path string) error {
		if len(it.Keys) > 1 {
			return p.typeError(it, path, "a list of strings", it.Val)
		}
		list, ok := it.Val.(*ast.ListType)
		if !ok {
			return p.typeError(it, path, "a list of strings", it.Val)
		}
		for _, e := range list.List {
			lit, ok := e.(*ast.LiteralType)
			if !ok || (lit.Token.Type != token.STRING && lit.Token.Type != token.HEREDOC) {
				return fmt.Errorf("%s:%d: %s: expected a list of strings, got an element %s",
					p.path, max(e.Pos().Line, line(it)), path, describe(e))
			}
			*dst = append(*dst, lit.Token.Value().(string))
		}
		return nil
	}
}

// metaField decodes a map of strings (client.meta). Keys are kept as
// written, dots and all; values must be strings, as in Nomad.
func (p *parser) metaField(dst *map[string]string) field {
	return func(it *ast.ObjectItem, path string) error {
		items, err := p.children(it, path)
		if err != nil {
			return err
		}
		for _, mi := range items {
			key, err := p.key(mi)
			if err != nil {
				return err
			}
			lit, ok := mi.Val.(*ast.LiteralType)
			if len(mi.Keys) > 1 || !ok || (lit.Token.Type != token.STRING && lit.Token.Type != token.HEREDOC) {
				got := describe(mi.Val)
				if len(mi.Keys) > 1 {
					got = "a block"
				}
				return fmt.Errorf("%s:%d: %s: value of %q must be a string, got %s",
					p.path, line(mi), path, key, got)
			}
			if *dst == nil {
				*dst = make(map[string]string)
			}
			(*dst)[key] = lit.Token.Value().(string)
		}
		return nil
	}
}

// blockField decodes a nested block with the keys b describes.
func (p *parser) blockField(b block) field {
	return func(it *ast.ObjectItem, path string) error {
		items, err := p.children(it, path)
		if err != nil {
			return err
		}
		return p.parse(items, b)
	}
}
