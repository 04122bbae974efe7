package agent

import (
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// writeConfig writes content to a file named name in a fresh temporary
// directory and returns its path.
func writeConfig(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// mustLoad loads path and fails the test on error.
func mustLoad(t *testing.T, path string) (*Config, []string) {
	t.Helper()
	cfg, warnings, err := LoadConfig(path)
	if err != nil {
		t.Fatalf("LoadConfig(%q) error = %v; want nil", path, err)
	}
	return cfg, warnings
}

func TestLoadConfig_ServerHCL(t *testing.T) {
	path := filepath.Join("testdata", "config", "server.hcl")
	got, warnings := mustLoad(t, path)

	want := &Config{
		Name:       "server-1",
		Region:     "eu",
		Datacenter: "dc-west",
		DataDir:    "/opt/nomad/data",
		BindAddr:   "0.0.0.0",
		LogLevel:   "warn",
		LogJSON:    true,
		Advertise: AdvertiseConfig{
			HTTP: "10.0.0.10",
			RPC:  "10.0.0.10:4647",
			Serf: "10.0.0.10",
		},
		Ports: PortsConfig{HTTP: 5646, RPC: 5647, Serf: 5648},
		Server: ServerConfig{
			Enabled:                true,
			BootstrapExpect:        3,
			RetryJoin:              []string{"127.0.0.1:4648", "10.0.0.11"},
			HeartbeatGrace:         30 * time.Second,
			MinHeartbeatTTL:        20 * time.Second,
			MaxHeartbeatsPerSecond: 100,
			FailoverHeartbeatTTL:   10 * time.Minute,
			NumSchedulers:          2,
		},
		ACL: ACLConfig{
			Enabled:   true,
			TokenTTL:  60 * time.Second,
			PolicyTTL: 45 * time.Second,
		},
		TLS: TLSConfig{
			HTTP:                 true,
			RPC:                  true,
			CAFile:               "/etc/nomad.d/nomad-agent-ca.pem",
			CertFile:             "/etc/nomad.d/global-server-nomad.pem",
			KeyFile:              "/etc/nomad.d/global-server-nomad-key.pem",
			VerifyServerHostname: true,
			TLSMinVersion:        "tls12",
		},
		Telemetry: TelemetryConfig{
			CollectionInterval:       time.Second,
			DisableHostname:          true,
			PrometheusMetrics:        true,
			PublishAllocationMetrics: true,
			PublishNodeMetrics:       true,
		},
		UI:    UIConfig{Enabled: ptrTo(true)}, // ui { enabled = true }, Tether's since the web page
		Files: []string{path},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("LoadConfig(%q) =\n%+v\nwant\n%+v", path, got, want)
	}

	wantWarnings := []struct {
		key  string
		line int
	}{
		{"enable_syslog", 10},
		{"leave_on_terminate", 11},
		{"disable_update_check", 12},
		{"server.encrypt", 29},
		{"server.node_gc_threshold", 35},
		{"server.server_join.retry_max", 39},
		{"server.server_join.retry_interval", 40},
		{"server.default_scheduler_config", 43},
		{"acl.role_ttl", 55},
		{"consul", 79},
	}
	if len(warnings) != len(wantWarnings) {
		t.Fatalf("got %d warnings; want %d:\n%s", len(warnings), len(wantWarnings), strings.Join(warnings, "\n"))
	}
	for i, w := range wantWarnings {
		text := `config key "` + w.key + `" (` + path + ":" + strconv.Itoa(w.line) + `) is not implemented by Tether and is ignored`
		if warnings[i] != text {
			t.Errorf("warning %d = %q; want %q", i, warnings[i], text)
		}
	}

	// The file is a complete server configuration once merged onto the
	// defaults.
	full := DefaultConfig().Merge(got)
	if err := full.NormalizeAddrs(); err != nil {
		t.Fatalf("NormalizeAddrs() error = %v; want nil", err)
	}
	if err := full.Validate(); err != nil {
		t.Errorf("Validate() error = %v; want nil", err)
	}
	wantAdv := AdvertiseConfig{HTTP: "10.0.0.10:5646", RPC: "10.0.0.10:4647", Serf: "10.0.0.10:5648"}
	if full.Advertise != wantAdv {
		t.Errorf("Advertise = %+v; want %+v", full.Advertise, wantAdv)
	}
}

func TestLoadConfig_ClientHCL(t *testing.T) {
	path := filepath.Join("testdata", "config", "client.hcl")
	got, warnings := mustLoad(t, path)

	want := &Config{
		Name:       "client-1",
		Datacenter: "dc1",
		DataDir:    "/opt/nomad/data",
		BindAddr:   "10.0.0.21",
		Client: ClientConfig{
			Enabled: true,
			Servers: []string{"10.0.0.10:4647", "10.0.0.11:4647"},
			Meta: map[string]string{
				"connect.log_level":     "debug",
				"connect.sidecar_image": "envoyproxy/envoy:v1.26",
				"rack":                  "r1",
			},
			StateDir:         "/opt/nomad/state",
			AllocDir:         "/opt/nomad/alloc",
			NodeClass:        "batch",
			NodePool:         "gpu",
			NetworkInterface: "eth0",
			CPUTotalCompute:  8000,
			GCInterval:       5 * time.Minute,
		},
		Telemetry: TelemetryConfig{PublishNodeMetrics: true},
		Plugins: map[string]*PluginConfig{
			"raw_exec": {Name: "raw_exec", Config: map[string]any{"enabled": true}},
			"docker": {Name: "docker", Config: map[string]any{
				"allow_privileged": false,
				"volumes":          []map[string]any{{"enabled": true}},
			}},
		},
		Files: []string{path},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("LoadConfig(%q) =\n%+v\nwant\n%+v", path, got, want)
	}
	for name, p := range got.Plugins {
		if !reflect.DeepEqual(p, want.Plugins[name]) {
			t.Errorf("Plugins[%q] = %+v; want %+v", name, p, want.Plugins[name])
		}
	}
	if !got.RawExecEnabled() {
		t.Errorf("RawExecEnabled() = false; want true")
	}

	wantKeys := []string{
		`"client.options" (` + path + `:25)`,
		`"client.reserved" (` + path + `:29)`,
		`"client.host_volume" (` + path + `:34)`,
		`"consul" (` + path + `:59)`,
		`"vault" (` + path + `:63)`,
	}
	if len(warnings) != len(wantKeys) {
		t.Fatalf("got %d warnings; want %d:\n%s", len(warnings), len(wantKeys), strings.Join(warnings, "\n"))
	}
	for i, k := range wantKeys {
		if !strings.Contains(warnings[i], k) {
			t.Errorf("warning %d = %q; want it to contain %s", i, warnings[i], k)
		}
	}

	full := DefaultConfig().Merge(got)
	if err := full.Validate(); err != nil {
		t.Errorf("Validate() error = %v; want nil", err)
	}
}

func TestLoadConfig_JSON(t *testing.T) {
	path := filepath.Join("testdata", "config", "agent.json")
	got, warnings := mustLoad(t, path)

	want := &Config{
		Name:     "json-agent",
		DataDir:  "/var/lib/tether",
		LogLevel: "DEBUG",
		Ports:    PortsConfig{HTTP: 6646},
		Server: ServerConfig{
			Enabled:         true,
			BootstrapExpect: 1,
			RetryJoin:       []string{"10.1.0.1", "10.1.0.2"},
		},
		Client: ClientConfig{
			Enabled: true,
			Meta:    map[string]string{"connect.log_level": "info", "zone": "z1"},
		},
		Telemetry: TelemetryConfig{PrometheusMetrics: true},
		Plugins: map[string]*PluginConfig{
			"raw_exec": {Name: "raw_exec", Config: map[string]any{"enabled": true}},
		},
		Files: []string{path},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("LoadConfig(%q) =\n%+v\nwant\n%+v", path, got, want)
	}
	if len(warnings) != 0 {
		t.Errorf("warnings = %q; want none", warnings)
	}
}

func TestLoadConfig_Dir(t *testing.T) {
	dir := filepath.Join("testdata", "config", "dir")
	got, warnings := mustLoad(t, dir)
	if len(warnings) != 0 {
		t.Errorf("warnings = %q; want none", warnings)
	}

	want := &Config{
		Region:   "base-region",
		DataDir:  "/data/override",
		LogLevel: "INFO",
		Client: ClientConfig{
			Enabled: true,
			Servers: []string{"10.9.9.9:4647"},
			Meta:    map[string]string{"rack": "r2", "zone": "z1"},
		},
		Files: []string{
			filepath.Join(dir, "10-base.hcl"),
			filepath.Join(dir, "20-override.json"),
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("LoadConfig(%q) =\n%+v\nwant\n%+v", dir, got, want)
	}
}

func TestLoadConfig_Errors(t *testing.T) {
	bad := filepath.Join("testdata", "config", "bad")
	cases := []struct {
		file string
		want string
	}{
		{"unknown_top.hcl", `unknown_top.hcl:3: unknown config key "bind_adr"`},
		{"unknown_nested.hcl", `unknown_nested.hcl:6: unknown config key "bootstrap_expct" in server block`},
		{"unknown_join.hcl", `unknown_join.hcl:4: unknown config key "retry_jion" in server.server_join block`},
		{"unknown_plugin.hcl", `unknown_plugin.hcl:2: unknown config key "confg" in plugin "raw_exec" block`},
		{"unknown.json", `unknown.json:5: unknown config key "tokens_ttl" in acl block`},
		{"bad_duration.hcl", `bad_duration.hcl:3: server.heartbeat_grace: invalid duration`},
		{"bad_meta.hcl", `bad_meta.hcl:5: client.meta: value of "cores" must be a string, got number 8`},
		{"bad_type.hcl", `bad_type.hcl:2: ports.http: expected a whole number, got "eighty"`},
		{"syntax.hcl", `parse ` + filepath.Join(bad, "syntax.hcl")},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join(bad, tc.file)
			cfg, _, err := LoadConfig(path)
			if err == nil {
				t.Fatalf("LoadConfig(%q) = %+v, nil; want error containing %q", path, cfg, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("LoadConfig(%q) error = %q; want it to contain %q", path, err, tc.want)
			}
			// Errors name the file by the path it was given as.
			if !strings.HasPrefix(err.Error(), path) && !strings.HasPrefix(err.Error(), "parse "+path) {
				t.Errorf("LoadConfig(%q) error = %q; want it to start with the path", path, err)
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		_, _, err := LoadConfig(filepath.Join(bad, "nope.hcl"))
		if !os.IsNotExist(unwrapAll(err)) {
			t.Errorf("LoadConfig(missing) error = %v; want a not-exist error", err)
		}
	})

	t.Run("bad file in dir", func(t *testing.T) {
		_, _, err := LoadConfig(bad)
		if err == nil {
			t.Fatalf("LoadConfig(%q) error = nil; want error", bad)
		}
		// The first file in name order fails first.
		if want := "bad_duration.hcl:3"; !strings.Contains(err.Error(), want) {
			t.Errorf("LoadConfig(%q) error = %q; want it to contain %q", bad, err, want)
		}
	})
}

// unwrapAll returns the innermost wrapped error.
func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

// TestLoadConfig_Snippets covers single keys and the shapes HCL v1 and its
// JSON form allow for them.
func TestLoadConfig_Snippets(t *testing.T) {
	cases := []struct {
		name    string
		file    string // file name; the extension picks nothing, hcl sniffs JSON
		content string
		check   func(t *testing.T, c *Config)
		wantErr string
	}{
		{
			name: "legacy retry_join adds to server_join",
			content: `server {
  retry_join = ["a"]
  server_join { retry_join = ["b"] start_join = ["c"] }
  start_join = ["d"]
}`,
			check: func(t *testing.T, c *Config) {
				if want := []string{"a", "b"}; !reflect.DeepEqual(c.Server.RetryJoin, want) {
					t.Errorf("RetryJoin = %q; want %q", c.Server.RetryJoin, want)
				}
				if want := []string{"c", "d"}; !reflect.DeepEqual(c.Server.StartJoin, want) {
					t.Errorf("StartJoin = %q; want %q", c.Server.StartJoin, want)
				}
			},
		},
		{
			name: "limits: rpc_max_conns_per_client set, others ignored",
			content: `limits {
  rpc_max_conns_per_client = 250
  http_max_conns_per_client = 10
}`,
			check: func(t *testing.T, c *Config) {
				if c.Limits.RPCMaxConnsPerClient != 250 {
					t.Errorf("RPCMaxConnsPerClient = %d; want 250", c.Limits.RPCMaxConnsPerClient)
				}
				d := DefaultConfig().Merge(c)
				if d.Limits.RPCMaxConnsPerClient != 250 {
					t.Errorf("merged RPCMaxConnsPerClient = %d; want 250", d.Limits.RPCMaxConnsPerClient)
				}
			},
		},
		{
			name:    "limits: rpc keepalives",
			content: `limits { rpc_keepalive_interval = "2s"  rpc_keepalive_timeout = "9s" }`,
			check: func(t *testing.T, c *Config) {
				d := DefaultConfig().Merge(c)
				if d.Limits.RPCKeepAliveInterval != 2*time.Second || d.Limits.RPCKeepAliveTimeout != 9*time.Second {
					t.Errorf("keepalive %v/%v; want 2s/9s", d.Limits.RPCKeepAliveInterval, d.Limits.RPCKeepAliveTimeout)
				}
				a := &Agent{cfg: d}
				for _, accepting := range []bool{true, false} {
					rc := a.withLimits(nil, accepting)
					if rc == nil || rc.KeepAliveInterval != 2*time.Second || rc.KeepAliveTimeout != 9*time.Second || rc.MaxConnsPerIP != 0 {
						t.Errorf("withLimits(nil, %v) = %+v; want the keepalives set, no per-IP cap", accepting, rc)
					}
				}
				if rc := (&Agent{cfg: DefaultConfig()}).withLimits(nil, true); rc != nil {
					t.Errorf("withLimits with no limits = %+v; want nil (the defaults)", rc)
				}
			},
		},
		{
			name:    "limits: rpc_max_conns_per_client absent means no cap",
			content: `limits { rpc_handshake_timeout = "5s" }`,
			check: func(t *testing.T, c *Config) {
				if n := DefaultConfig().Merge(c).Limits.RPCMaxConnsPerClient; n != 0 {
					t.Errorf("RPCMaxConnsPerClient = %d; want 0 (no cap)", n)
				}
			},
		},
		{
			name:    "limits: unknown key",
			content: `limits { rpc_max_conns = 1 }`,
			wantErr: `unknown config key "rpc_max_conns" in limits block`,
		},
		{
			name:    "gomaxprocs governor on",
			content: `gomaxprocs_governor = true`,
			check: func(t *testing.T, c *Config) {
				if !c.GOMAXPROCSGovernor {
					t.Error("GOMAXPROCSGovernor = false; want true")
				}
			},
		},
		{
			name:    "gomaxprocs governor in JSON, off",
			content: `{"gomaxprocs_governor": false}`,
			check: func(t *testing.T, c *Config) {
				if c.GOMAXPROCSGovernor {
					t.Error("GOMAXPROCSGovernor = true; want false")
				}
			},
		},
		{
			name:    "gomaxprocs governor must be a bool",
			content: `gomaxprocs_governor = "yes"`,
			wantErr: "gomaxprocs_governor",
		},
		{
			name:    "client server_join fills servers",
			content: `client { enabled = true  server_join { retry_join = ["s1:4647"] } }`,
			check: func(t *testing.T, c *Config) {
				if want := []string{"s1:4647"}; !reflect.DeepEqual(c.Client.Servers, want) {
					t.Errorf("Client.Servers = %q; want %q", c.Client.Servers, want)
				}
			},
		},
		{
			name:    "quoted dotted meta keys",
			content: `client { meta { "connect.log_level" = "debug" rack = "r1" } }`,
			check: func(t *testing.T, c *Config) {
				want := map[string]string{"connect.log_level": "debug", "rack": "r1"}
				if !reflect.DeepEqual(c.Client.Meta, want) {
					t.Errorf("Client.Meta = %q; want %q", c.Client.Meta, want)
				}
			},
		},
		{
			name:    "meta as an assignment",
			content: `client { meta = { a = "1" } }`,
			check: func(t *testing.T, c *Config) {
				if got := c.Client.Meta["a"]; got != "1" {
					t.Errorf(`Client.Meta["a"] = %q; want "1"`, got)
				}
			},
		},
		{
			name:    "bools and numbers as strings",
			content: `acl { enabled = "true" }` + "\n" + `ports { http = "8080" }`,
			check: func(t *testing.T, c *Config) {
				if !c.ACL.Enabled || c.Ports.HTTP != 8080 {
					t.Errorf("ACL.Enabled, Ports.HTTP = %v, %d; want true, 8080", c.ACL.Enabled, c.Ports.HTTP)
				}
			},
		},
		{
			name:    "keys fold case like HCL decoding",
			content: `Server { Enabled = true }`,
			check: func(t *testing.T, c *Config) {
				if !c.Server.Enabled {
					t.Errorf("Server.Enabled = false; want true")
				}
			},
		},
		{
			name: "several plugin blocks and repeated config",
			content: `plugin "raw_exec" { config { enabled = false } }
plugin "exec" { config { no_pivot_root = true } }
plugin "raw_exec" { config { enabled = true } }`,
			check: func(t *testing.T, c *Config) {
				if len(c.Plugins) != 2 {
					t.Errorf("len(Plugins) = %d; want 2", len(c.Plugins))
				}
				if !c.RawExecEnabled() {
					t.Errorf("RawExecEnabled() = false; want true")
				}
				if got := c.Plugins["exec"].Config["no_pivot_root"]; got != true {
					t.Errorf("exec no_pivot_root = %v; want true", got)
				}
			},
		},
		{
			name:    "empty mock_driver block enables it",
			content: `plugin "mock_driver" { }`,
			check: func(t *testing.T, c *Config) {
				if !c.MockDriverEnabled() || c.RawExecEnabled() {
					t.Errorf("MockDriverEnabled() = %v, RawExecEnabled() = %v; want true, false", c.MockDriverEnabled(), c.RawExecEnabled())
				}
			},
		},
		{
			name:    "mock_driver disabled in its config",
			content: `plugin "mock_driver" { config { enabled = false } }`,
			check: func(t *testing.T, c *Config) {
				if c.MockDriverEnabled() {
					t.Errorf("MockDriverEnabled() = true; want false")
				}
			},
		},
		{
			name:    "mock_driver in JSON",
			file:    "c.json",
			content: `{"plugin": [{"mock_driver": [{"config": [{"enabled": true}]}]}]}`,
			check: func(t *testing.T, c *Config) {
				if !c.MockDriverEnabled() {
					t.Errorf("MockDriverEnabled() = false; want true")
				}
			},
		},
		{
			name: "JSON blocks as lists of objects",
			file: "c.json",
			content: `{
  "server": [{"enabled": true, "server_join": [{"retry_join": ["x"]}]}],
  "plugin": [{"raw_exec": [{"config": [{"enabled": true}]}]}]
}`,
			check: func(t *testing.T, c *Config) {
				if !c.Server.Enabled || !reflect.DeepEqual(c.Server.RetryJoin, []string{"x"}) {
					t.Errorf("Server = %+v; want enabled with retry_join [x]", c.Server)
				}
				if !c.RawExecEnabled() {
					t.Errorf("RawExecEnabled() = false; want true")
				}
			},
		},
		{
			name:    "heredoc string",
			content: "name = <<EOF\nnode-7\nEOF\n",
			check: func(t *testing.T, c *Config) {
				if c.Name != "node-7\n" {
					t.Errorf("Name = %q; want %q", c.Name, "node-7\n")
				}
			},
		},
		{
			name:    "empty file",
			content: "# nothing here\n",
			check: func(t *testing.T, c *Config) {
				if len(c.Files) != 1 || c.DataDir != "" {
					t.Errorf("config = %+v; want only Files set", c)
				}
			},
		},
		{name: "string where a block is expected", content: `server = "yes"`, wantErr: `:1: server: expected a block, got string "yes"`},
		{name: "number where a string is expected", content: `region = 5`, wantErr: `:1: region: expected a string, got number 5`},
		{name: "list where a bool is expected", content: `log_json = [true]`, wantErr: `:1: log_json: expected a bool, got a list`},
		{name: "bad bool string", content: `log_json = "yes"`, wantErr: `:1: log_json: expected a bool, got string "yes"`},
		{name: "float port", content: `ports { rpc = 1.5 }`, wantErr: `:1: ports.rpc: expected a whole number, got number 1.5`},
		{name: "duration without unit", content: "acl {\n token_ttl = \"30\"\n}", wantErr: `:2: acl.token_ttl: invalid duration`},
		{name: "duration as a number", content: `client { gc_interval = 30 }`, wantErr: `:1: client.gc_interval: expected a duration such as "30s", got number 30`},
		{name: "servers not a list", content: `client { servers = "a" }`, wantErr: `:1: client.servers: expected a list of strings, got string "a"`},
		{name: "number in a list", content: `client { servers = ["a", 1] }`, wantErr: `client.servers: expected a list of strings, got an element number 1`},
		{name: "bool in meta", content: `client { meta { ok = true } }`, wantErr: `client.meta: value of "ok" must be a string, got bool true`},
		{name: "block in meta", content: `client { meta { a { b = "c" } } }`, wantErr: `client.meta: value of "a" must be a string, got a block`},
		{name: "unknown key in advertise", content: "advertise {\n  htp = \"x\"\n}", wantErr: `:2: unknown config key "htp" in advertise block`},
		{name: "unknown key in tls", content: `tls { cert = "x" }`, wantErr: `:1: unknown config key "cert" in tls block`},
		{name: "unknown key in client", content: "client {\n\n  node_clas = \"x\"\n}", wantErr: `:3: unknown config key "node_clas" in client block`},
		{name: "unknown label on server", content: `server "x" { }`, wantErr: `:1: unknown config key "x" in server block`},
		{name: "bad plugin config", content: `plugin "raw_exec" { config = "x" }`, wantErr: `plugin.raw_exec.config: expected a block`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			file := tc.file
			if file == "" {
				file = "agent.hcl"
			}
			path := writeConfig(t, file, tc.content)
			cfg, _, err := LoadConfig(path)
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("LoadConfig() = %+v, nil; want error containing %q", cfg, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), path) {
					t.Errorf("LoadConfig() error = %q; want %q prefixed by the path", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadConfig() error = %v; want nil", err)
			}
			tc.check(t, cfg)
		})
	}
}

func TestLoadConfig_Warnings(t *testing.T) {
	cases := []struct {
		name    string
		content string
		want    []string // keys, with the line they are on
	}{
		{"top level", "data_dir = \"/d\"\nlimits {\n  https_handshake_timeout = \"5s\"\n}\nreporting {\n}", []string{`"limits.https_handshake_timeout" (%s:3)`, `"reporting" (%s:5)`}},
		{"server", "server {\n  raft_protocol = 3\n  license_path = \"/l\"\n}", []string{`"server.raft_protocol" (%s:2)`, `"server.license_path" (%s:3)`}},
		{"client", "client {\n  drain_on_shutdown {\n    deadline = \"1m\"\n  }\n  gc_max_allocs = 50\n}", []string{`"client.drain_on_shutdown" (%s:2)`, `"client.gc_max_allocs" (%s:5)`}},
		{"acl", `acl { replication_token = "x" }`, []string{`"acl.replication_token" (%s:1)`}},
		{"tls", `tls { tls_prefer_server_cipher_suites = true }`, []string{`"tls.tls_prefer_server_cipher_suites" (%s:1)`}},
		{"plugin args", `plugin "x" { args = ["-v"] }`, []string{`"plugin.x.args" (%s:1)`}},
		{"nothing to warn", `name = "n"`, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, "agent.hcl", tc.content)
			_, warnings := mustLoad(t, path)
			if len(warnings) != len(tc.want) {
				t.Fatalf("warnings = %q; want %d", warnings, len(tc.want))
			}
			for i, w := range tc.want {
				want := "config key " + strings.ReplaceAll(w, "%s", path) + " is not implemented by Tether and is ignored"
				if warnings[i] != want {
					t.Errorf("warning %d = %q; want %q", i, warnings[i], want)
				}
			}
		})
	}
}

func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	host, _ := os.Hostname()
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"Name", c.Name, host},
		{"Datacenter", c.Datacenter, "dc1"},
		{"Region", c.Region, "global"},
		{"BindAddr", c.BindAddr, "0.0.0.0"},
		{"LogLevel", c.LogLevel, "INFO"},
		{"Ports", c.Ports, PortsConfig{HTTP: 4646, RPC: 4647, Serf: 4648}},
		{"ACL.TokenTTL", c.ACL.TokenTTL, 30 * time.Second},
		{"ACL.PolicyTTL", c.ACL.PolicyTTL, 30 * time.Second},
		{"Server.Enabled", c.Server.Enabled, false},
		{"Client.Enabled", c.Client.Enabled, false},
		{"DevMode", c.DevMode, false},
		{"len(Plugins)", len(c.Plugins), 0},
		{"RawExecEnabled", c.RawExecEnabled(), false},
	}
	for _, tc := range checks {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("DefaultConfig().%s = %v; want %v", tc.name, tc.got, tc.want)
		}
	}
	// With no role and no data_dir it must not validate.
	if err := c.Validate(); err == nil {
		t.Errorf("DefaultConfig().Validate() = nil; want error")
	}
}

func TestDevConfig(t *testing.T) {
	c := DevConfig()
	host, _ := os.Hostname()
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"DevMode", c.DevMode, true},
		{"Name", c.Name, host},
		{"Server.Enabled", c.Server.Enabled, true},
		{"Server.BootstrapExpect", c.Server.BootstrapExpect, 1},
		{"Client.Enabled", c.Client.Enabled, true},
		{"BindAddr", c.BindAddr, "127.0.0.1"},
		{"LogLevel", c.LogLevel, "DEBUG"},
		{"DataDir", c.DataDir, ""},
		{"GOMAXPROCSGovernor", c.GOMAXPROCSGovernor, false},
		{"RawExecEnabled", c.RawExecEnabled(), true},
		{"raw_exec enabled", c.Plugins["raw_exec"].Config["enabled"], true},
		{"MockDriverEnabled", c.MockDriverEnabled(), true},
	}
	for _, tc := range checks {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("DevConfig().%s = %v; want %v", tc.name, tc.got, tc.want)
		}
	}
	if err := c.NormalizeAddrs(); err != nil {
		t.Fatalf("NormalizeAddrs() error = %v; want nil", err)
	}
	if c.Advertise.HTTP != "127.0.0.1:4646" {
		t.Errorf("Advertise.HTTP = %q; want %q", c.Advertise.HTTP, "127.0.0.1:4646")
	}
	if err := c.Validate(); err != nil {
		t.Errorf("DevConfig().Validate() = %v; want nil", err)
	}
}

func TestConfig_Merge(t *testing.T) {
	base := DefaultConfig()
	base.Client.Meta = map[string]string{"a": "1", "b": "2"}
	base.Server.RetryJoin = []string{"x", "y"}
	base.Plugins["docker"] = &PluginConfig{Name: "docker", Config: map[string]any{"a": 1, "b": 2}}
	base.Files = []string{"one.hcl"}

	over := &Config{
		Region:             "eu",
		LogJSON:            true,
		GOMAXPROCSGovernor: true,
		Ports:              PortsConfig{RPC: 9000},
		Server:             ServerConfig{Enabled: true, RetryJoin: []string{"z"}},
		Client:             ClientConfig{Meta: map[string]string{"b": "3", "c": "4"}, GCInterval: time.Hour},
		ACL:                ACLConfig{TokenTTL: time.Minute},
		Plugins: map[string]*PluginConfig{
			"docker":   {Name: "docker", Config: map[string]any{"b": 5}},
			"raw_exec": {Name: "raw_exec", Config: map[string]any{"enabled": true}},
		},
		Files: []string{"two.hcl"},
	}

	got := base.Merge(over)
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"Region", got.Region, "eu"},
		{"Datacenter (kept)", got.Datacenter, "dc1"},
		{"LogJSON", got.LogJSON, true},
		{"GOMAXPROCSGovernor", got.GOMAXPROCSGovernor, true},
		{"Ports", got.Ports, PortsConfig{HTTP: 4646, RPC: 9000, Serf: 4648}},
		{"Server.Enabled", got.Server.Enabled, true},
		{"Server.RetryJoin (replaced)", got.Server.RetryJoin, []string{"z"}},
		{"Client.Meta (merged)", got.Client.Meta, map[string]string{"a": "1", "b": "3", "c": "4"}},
		{"Client.GCInterval", got.Client.GCInterval, time.Hour},
		{"ACL.TokenTTL", got.ACL.TokenTTL, time.Minute},
		{"ACL.PolicyTTL (kept)", got.ACL.PolicyTTL, 30 * time.Second},
		{"docker config (merged)", got.Plugins["docker"].Config, map[string]any{"a": 1, "b": 5}},
		{"RawExecEnabled", got.RawExecEnabled(), true},
		{"Files", got.Files, []string{"one.hcl", "two.hcl"}},
	}
	for _, tc := range checks {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("Merge().%s = %v; want %v", tc.name, tc.got, tc.want)
		}
	}

	// Neither input changes, and the result shares no maps or slices.
	if base.Region != "global" || base.Client.Meta["b"] != "2" || base.Plugins["docker"].Config["b"] != 2 || len(base.Plugins) != 1 {
		t.Errorf("Merge changed its receiver: %+v", base)
	}
	got.Client.Meta["a"] = "changed"
	got.Server.RetryJoin[0] = "changed"
	got.Plugins["raw_exec"].Config["enabled"] = false
	if base.Client.Meta["a"] != "1" || over.Server.RetryJoin[0] != "z" || over.Plugins["raw_exec"].Config["enabled"] != true {
		t.Errorf("Merge result aliases its inputs")
	}

	// A false boolean in a later file does not turn an earlier true off,
	// as in Nomad.
	if got := got.Merge(&Config{}); !got.Server.Enabled || !got.LogJSON {
		t.Errorf("Merge(empty) turned booleans off: %+v", got)
	}
	if got := base.Merge(nil); !reflect.DeepEqual(got, base) {
		t.Errorf("Merge(nil) = %+v; want a copy of the receiver", got)
	}
}

func TestConfig_Validate(t *testing.T) {
	valid := func() *Config {
		c := DefaultConfig()
		c.Name = "n1"
		c.DataDir = "/var/lib/tether"
		c.Server.Enabled = true
		return c
	}
	cases := []struct {
		name   string
		modify func(c *Config)
		want   []string // substrings of the error; none means valid
	}{
		{"valid server", func(c *Config) {}, nil},
		{"valid client", func(c *Config) {
			c.Server.Enabled = false
			c.Client.Enabled = true
			c.Client.Servers = []string{"10.0.0.1:4647"}
		}, nil},
		{"server and client without servers", func(c *Config) { c.Client.Enabled = true }, nil},
		{"dev without data_dir", func(c *Config) { c.DataDir = ""; c.DevMode = true }, nil},
		{"negative rpc_max_conns_per_client", func(c *Config) { c.Limits.RPCMaxConnsPerClient = -1 }, []string{"limits.rpc_max_conns_per_client -1 must not be negative"}},
		{"negative rpc_keepalive_timeout", func(c *Config) { c.Limits.RPCKeepAliveTimeout = -time.Second }, []string{"limits.rpc_keepalive_interval and rpc_keepalive_timeout must not be negative"}},
		{"lower-case log level", func(c *Config) { c.LogLevel = "trace" }, nil},
		{"tls with files", func(c *Config) {
			c.TLS = TLSConfig{HTTP: true, RPC: true, CertFile: "c", KeyFile: "k", TLSMinVersion: "tls13"}
		}, nil},
		{"no role", func(c *Config) { c.Server.Enabled = false }, []string{"server.enabled or client.enabled"}},
		{"client without servers", func(c *Config) {
			c.Server.Enabled = false
			c.Client.Enabled = true
		}, []string{"client.servers"}},
		{"http port zero", func(c *Config) { c.Ports.HTTP = 0 }, []string{"ports.http 0 is out of range"}},
		{"rpc port too big", func(c *Config) { c.Ports.RPC = 70000 }, []string{"ports.rpc 70000 is out of range"}},
		{"negative serf port", func(c *Config) { c.Ports.Serf = -1 }, []string{"ports.serf -1"}},
		{"negative bootstrap_expect", func(c *Config) { c.Server.BootstrapExpect = -1 }, []string{"server.bootstrap_expect -1"}},
		{"missing data_dir", func(c *Config) { c.DataDir = "" }, []string{"data_dir is required"}},
		{"bad log level", func(c *Config) { c.LogLevel = "verbose" }, []string{`log_level "verbose" is invalid`}},
		{"empty name", func(c *Config) { c.Name = "" }, []string{"name must not be empty"}},
		{"empty region", func(c *Config) { c.Region = "" }, []string{"region must not be empty"}},
		{"negative durations", func(c *Config) {
			c.Server.HeartbeatGrace = -time.Second
			c.ACL.TokenTTL = -time.Second
		}, []string{"server.heartbeat_grace", "acl.token_ttl"}},
		{"negative heartbeat settings", func(c *Config) {
			c.Server.MinHeartbeatTTL = -time.Second
			c.Server.MaxHeartbeatsPerSecond = -1
			c.Server.FailoverHeartbeatTTL = -time.Minute
		}, []string{"server.min_heartbeat_ttl", "server.max_heartbeats_per_second -1", "server.failover_heartbeat_ttl"}},
		{"tls without cert", func(c *Config) { c.TLS.RPC = true }, []string{"tls.cert_file and tls.key_file"}},
		{"verify client without ca", func(c *Config) { c.TLS.VerifyHTTPSClient = true }, []string{"tls.ca_file"}},
		{"bad tls version", func(c *Config) { c.TLS.TLSMinVersion = "ssl3" }, []string{"tls.tls_min_version"}},
		{"several problems at once", func(c *Config) {
			c.DataDir = ""
			c.Ports.HTTP = 0
			c.LogLevel = "x"
		}, []string{"data_dir", "ports.http", "log_level"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.modify(c)
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Errorf("Validate() = %v; want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil; want error containing %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q; want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestConfig_RawExecEnabled(t *testing.T) {
	cases := []struct {
		name    string
		dev     bool
		plugins map[string]*PluginConfig
		want    bool
	}{
		{"no plugins", false, nil, false},
		{"dev mode", true, nil, true},
		{"enabled", false, map[string]*PluginConfig{"raw_exec": {Config: map[string]any{"enabled": true}}}, true},
		{"enabled as string", false, map[string]*PluginConfig{"raw_exec": {Config: map[string]any{"enabled": "true"}}}, true},
		{"disabled", false, map[string]*PluginConfig{"raw_exec": {Config: map[string]any{"enabled": false}}}, false},
		{"no config", false, map[string]*PluginConfig{"raw_exec": {Name: "raw_exec"}}, false},
		{"nil plugin", false, map[string]*PluginConfig{"raw_exec": nil}, false},
		{"other plugin", false, map[string]*PluginConfig{"exec": {Config: map[string]any{"enabled": true}}}, false},
	}
	for _, tc := range cases {
		c := &Config{DevMode: tc.dev, Plugins: tc.plugins}
		if got := c.RawExecEnabled(); got != tc.want {
			t.Errorf("%s: RawExecEnabled() = %v; want %v", tc.name, got, tc.want)
		}
	}
}

func TestConfig_MockDriverEnabled(t *testing.T) {
	cases := []struct {
		name    string
		dev     bool
		plugins map[string]*PluginConfig
		want    bool
	}{
		{"no plugins", false, nil, false},
		{"dev mode", true, nil, true},
		{"block alone", false, map[string]*PluginConfig{"mock_driver": {Name: "mock_driver"}}, true},
		{"enabled", false, map[string]*PluginConfig{"mock_driver": {Config: map[string]any{"enabled": true}}}, true},
		{"enabled as string", false, map[string]*PluginConfig{"mock_driver": {Config: map[string]any{"enabled": "true"}}}, true},
		{"disabled", false, map[string]*PluginConfig{"mock_driver": {Config: map[string]any{"enabled": false}}}, false},
		{"disabled as string", false, map[string]*PluginConfig{"mock_driver": {Config: map[string]any{"enabled": "false"}}}, false},
		{"enabled of a wrong type", false, map[string]*PluginConfig{"mock_driver": {Config: map[string]any{"enabled": 1}}}, false},
		{"other config keys", false, map[string]*PluginConfig{"mock_driver": {Config: map[string]any{"fs_isolation": "none"}}}, true},
		{"nil plugin", false, map[string]*PluginConfig{"mock_driver": nil}, false},
		{"raw_exec only", false, map[string]*PluginConfig{"raw_exec": {Config: map[string]any{"enabled": true}}}, false},
	}
	for _, tc := range cases {
		c := &Config{DevMode: tc.dev, Plugins: tc.plugins}
		if got := c.MockDriverEnabled(); got != tc.want {
			t.Errorf("%s: MockDriverEnabled() = %v; want %v", tc.name, got, tc.want)
		}
	}
}

func TestConfig_NormalizeAddrs(t *testing.T) {
	old := privateIPv4
	privateIPv4 = func() string { return "192.168.1.5" }
	t.Cleanup(func() { privateIPv4 = old })

	ports := PortsConfig{HTTP: 4646, RPC: 4647, Serf: 4648}
	cases := []struct {
		name    string
		bind    string
		adv     AdvertiseConfig
		want    AdvertiseConfig
		wantErr string
	}{
		{"wildcard bind uses private ip", "0.0.0.0", AdvertiseConfig{},
			AdvertiseConfig{"192.168.1.5:4646", "192.168.1.5:4647", "192.168.1.5:4648"}, ""},
		{"ipv6 wildcard bind", "::", AdvertiseConfig{},
			AdvertiseConfig{"192.168.1.5:4646", "192.168.1.5:4647", "192.168.1.5:4648"}, ""},
		{"specific bind", "10.1.2.3", AdvertiseConfig{},
			AdvertiseConfig{"10.1.2.3:4646", "10.1.2.3:4647", "10.1.2.3:4648"}, ""},
		{"host without port", "0.0.0.0", AdvertiseConfig{HTTP: "lb.example.com", RPC: "10.0.0.9"},
			AdvertiseConfig{"lb.example.com:4646", "10.0.0.9:4647", "192.168.1.5:4648"}, ""},
		{"host with port kept", "0.0.0.0", AdvertiseConfig{HTTP: "10.0.0.9:80"},
			AdvertiseConfig{"10.0.0.9:80", "192.168.1.5:4647", "192.168.1.5:4648"}, ""},
		{"ipv6 hosts", "::1", AdvertiseConfig{HTTP: "fe80::1", RPC: "[fe80::2]", Serf: "[fe80::3]:99"},
			AdvertiseConfig{"[fe80::1]:4646", "[fe80::2]:4647", "[fe80::3]:99"}, ""},
		{"ipv6 bind", "::1", AdvertiseConfig{},
			AdvertiseConfig{"[::1]:4646", "[::1]:4647", "[::1]:4648"}, ""},
		{"wildcard advertise", "0.0.0.0", AdvertiseConfig{HTTP: "0.0.0.0:4646"}, AdvertiseConfig{}, "advertise.http"},
		{"bad advertise port", "0.0.0.0", AdvertiseConfig{RPC: "h:port"}, AdvertiseConfig{}, `advertise.rpc "h:port": invalid port`},
		{"sockaddr template", `{{ GetPrivateIP }}`, AdvertiseConfig{}, AdvertiseConfig{}, "go-sockaddr templates are not supported"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &Config{BindAddr: tc.bind, Ports: ports, Advertise: tc.adv}
			err := c.NormalizeAddrs()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("NormalizeAddrs() error = %v; want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("NormalizeAddrs() error = %v; want nil", err)
			}
			if c.Advertise != tc.want {
				t.Errorf("Advertise = %+v; want %+v", c.Advertise, tc.want)
			}
			// A second call changes nothing.
			if err := c.NormalizeAddrs(); err != nil || c.Advertise != tc.want {
				t.Errorf("second NormalizeAddrs() = %v, %+v; want nil, %+v", err, c.Advertise, tc.want)
			}
		})
	}
}

func TestConfig_FirstPrivateIPv4(t *testing.T) {
	// Whatever the machine has, the answer is a private or loopback IPv4.
	got := firstPrivateIPv4()
	if !strings.HasPrefix(got, "10.") && !strings.HasPrefix(got, "172.") &&
		!strings.HasPrefix(got, "192.168.") && got != "127.0.0.1" {
		t.Errorf("firstPrivateIPv4() = %q; want a private IPv4 or 127.0.0.1", got)
	}
}
