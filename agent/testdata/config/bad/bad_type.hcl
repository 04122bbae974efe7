ports {
  http = "eighty"
}
