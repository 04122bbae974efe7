# A server: HTTP API on 4646, RPC for nodes and peers on 4647.
name      = "server1"
data_dir  = "/var/lib/tether/server"
bind_addr = "0.0.0.0"

advertise {
  http = "10.0.0.10"
  rpc  = "10.0.0.10"
  serf = "10.0.0.10"
}

server {
  enabled          = true
  bootstrap_expect = 1
}
