# A Nomad 1.6 client agent configuration.
name       = "client-1"
datacenter = "dc1"
data_dir   = "/opt/nomad/data"
bind_addr  = "10.0.0.21"

client {
  enabled    = true
  servers    = ["10.0.0.10:4647", "10.0.0.11:4647"]
  node_class = "batch"
  node_pool  = "gpu"
  state_dir  = "/opt/nomad/state"
  alloc_dir  = "/opt/nomad/alloc"

  network_interface = "eth0"
  cpu_total_compute = 8000
  gc_interval       = "5m"

  meta {
    "connect.log_level"       = "debug"
    "connect.sidecar_image"   = "envoyproxy/envoy:v1.26"
    rack                      = "r1"
  }

  options {
    "driver.denylist" = "docker"
  }

  reserved {
    cpu    = 500
    memory = 512
  }

  host_volume "scratch" {
    path      = "/mnt/scratch"
    read_only = false
  }
}

plugin "raw_exec" {
  config {
    enabled = true
  }
}

plugin "docker" {
  config {
    allow_privileged = false
    volumes {
      enabled = true
    }
  }
}

telemetry {
  publish_node_metrics = true
}

consul {
  address = "127.0.0.1:8500"
}

vault {
  enabled = false
}
