client {
  enabled = true
  meta {
    rack  = "r1"
    cores = 8
  }
}
