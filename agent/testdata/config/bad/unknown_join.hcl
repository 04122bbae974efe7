server {
  enabled = true
  server_join {
    retry_jion = ["a"]
  }
}
