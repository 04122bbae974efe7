server {
  enabled         = true
  heartbeat_grace = "10 seconds"
}
