plugin "raw_exec" {
  confg {
    enabled = true
  }
}
