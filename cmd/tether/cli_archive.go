package main

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	nomad "github.com/hashicorp/nomad/api"
)

// saveArchive is `alloc fs -archive`: GET /v1/client/fs/archive of the
// directory path, through the official client's raw requests, into
// outFile (plain tar when it ends in .tar, else tar.gz), or to stdout when
// outFile is "" and stdout is no terminal. An archive cut short (the
// answer aborted) is an error, and the partial file is removed.
func (m *meta) saveArchive(c *nomad.Client, alloc *nomad.Allocation, path, outFile string) int {
	format := "tar.gz"
	if strings.HasSuffix(outFile, ".tar") {
		format = "tar"
	}
	if outFile == "" && isTerminal(m.stdout) {
		m.ui.Error("An archive is binary: save it with -o FILE, or pipe the output.")
		return 1
	}
	ctx, stop := interruptContext()
	defer stop()
	q := qctx(ctx)
	q.Params = map[string]string{"path": path, "format": format}
	r, err := c.Raw().Response("/v1/client/fs/archive/"+url.PathEscape(alloc.ID), q)
	if err != nil {
		m.apiError("reading archive", err)
		return 1
	}
	defer r.Close()
	var out io.Writer = m.stdout
	var file *os.File
	if outFile != "" {
		if file, err = os.Create(outFile); err != nil {
			m.ui.Error(fmt.Sprintf("Error creating %s: %v", outFile, err))
			return 1
		}
		out = file
	}
	_, cerr := io.Copy(out, r)
	if file != nil {
		if err := file.Close(); cerr == nil {
			cerr = err
		}
		if cerr != nil {
			os.Remove(outFile)
		}
	}
	if cerr != nil {
		m.ui.Error(fmt.Sprintf("Error saving the archive of %s: %v", path, cerr))
		return 1
	}
	return 0
}
