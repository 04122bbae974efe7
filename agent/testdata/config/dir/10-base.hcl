region    = "base-region"
data_dir  = "/data/base"
log_level = "INFO"

client {
  enabled = true
  servers = ["10.0.0.1:4647"]
  meta {
    rack = "r1"
    zone = "z1"
  }
}
