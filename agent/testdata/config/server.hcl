# A Nomad 1.6 server agent configuration, as operators write it.
name       = "server-1"
region     = "eu"
datacenter = "dc-west"
data_dir   = "/opt/nomad/data"
bind_addr  = "0.0.0.0"
log_level  = "warn"
log_json   = true

enable_syslog        = false
leave_on_terminate   = true
disable_update_check = true

advertise {
  http = "10.0.0.10"
  rpc  = "10.0.0.10:4647"
  serf = "10.0.0.10"
}

ports {
  http = 5646
  rpc  = 5647
  serf = 5648
}

server {
  enabled                   = true
  bootstrap_expect          = 3
  encrypt                   = "cg8StVXbQJ0gPvMd9o7yrg=="
  heartbeat_grace           = "30s"
  min_heartbeat_ttl         = "20s"
  max_heartbeats_per_second = 100
  failover_heartbeat_ttl    = "10m"
  num_schedulers            = 2
  node_gc_threshold         = "24h"

  server_join {
    retry_join     = ["127.0.0.1:4648", "10.0.0.11"]
    retry_max      = 3
    retry_interval = "15s"
  }

  default_scheduler_config {
    scheduler_algorithm = "spread"
    preemption_config {
      batch_scheduler_enabled = true
    }
  }
}

acl {
  enabled    = true
  token_ttl  = "60s"
  policy_ttl = "45s"
  role_ttl   = "45s"
}

tls {
  http = true
  rpc  = true

  ca_file   = "/etc/nomad.d/nomad-agent-ca.pem"
  cert_file = "/etc/nomad.d/global-server-nomad.pem"
  key_file  = "/etc/nomad.d/global-server-nomad-key.pem"

  verify_server_hostname = true
  verify_https_client    = false
  tls_min_version        = "tls12"
}

telemetry {
  collection_interval        = "1s"
  disable_hostname           = true
  prometheus_metrics         = true
  publish_allocation_metrics = true
  publish_node_metrics       = true
}

consul {
  address = "127.0.0.1:8500"
  token   = "abcd1234"
}

ui {
  enabled = true
}
