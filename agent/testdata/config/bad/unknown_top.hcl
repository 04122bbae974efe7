data_dir = "/tmp"

bind_adr = "127.0.0.1"
