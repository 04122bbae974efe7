package server

import "github.com/hashicorp/go-memdb"

// memdbTxn is the write transaction type handed to StateStore.write.
type memdbTxn = *memdb.Txn
