# A node agent: dials out to the servers (it may sit behind NAT), runs
# raw_exec tasks, serves the client API on its own HTTP port too.
name     = "node1"
data_dir = "/var/lib/tether/client"

client {
  enabled = true
  servers = ["10.0.0.10:4647"]

  meta {
    "connect.log_level" = "info"
    rack                = "r1"
  }
}

plugin "raw_exec" {
  config {
    enabled = true
  }
}
