data_dir = "/tmp"

server {
  enabled = true

  bootstrap_expct = 3
}
