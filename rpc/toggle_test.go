package rpc

import "os"

func init() { coalesceOff = os.Getenv("COALESCE_OFF") != "" }
