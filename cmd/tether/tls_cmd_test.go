package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// runCmd runs the CLI with args and returns the exit code and output.
func runCmd(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestTLSCommand_CreateCluster(t *testing.T) {
	t.Chdir(t.TempDir())

	code, out, errOut := runCmd("tls", "ca", "create")
	if code != exitOK {
		t.Fatalf("tls ca create = %d, %q; want 0", code, errOut)
	}
	mustContainStr(t, out, "==> CA certificate saved to: nomad-agent-ca.pem")
	mustContainStr(t, out, "==> CA certificate key saved to: nomad-agent-ca-key.pem")
	wantMode(t, "nomad-agent-ca.pem", 0o644)
	wantMode(t, "nomad-agent-ca-key.pem", 0o600)
	caPEM, err := os.ReadFile("nomad-agent-ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("nomad-agent-ca.pem holds no certificate")
	}

	for _, tc := range []struct {
		args     []string
		certFile string
		keyFile  string
		wantDNS  []string
		wantIPs  []string
		wantOut  string
	}{
		{[]string{"-server"}, "global-server-nomad.pem", "global-server-nomad-key.pem",
			[]string{"server.global.nomad", "localhost"}, []string{"127.0.0.1"}, "==> Server Certificate saved to global-server-nomad.pem"},
		{[]string{"-client"}, "global-client-nomad.pem", "global-client-nomad-key.pem",
			[]string{"client.global.nomad", "localhost"}, []string{"127.0.0.1"}, "==> Client Certificate key saved to global-client-nomad-key.pem"},
		{[]string{"-cli"}, "global-cli-nomad.pem", "global-cli-nomad-key.pem",
			[]string{"cli.global.nomad", "localhost"}, nil, "==> Cli Certificate saved to global-cli-nomad.pem"},
		{[]string{"-server", "-region", "eu", "-node", "s1", "-additional-dnsname", "nomad.example.com", "-additional-ipaddress", "10.0.0.7", "-days", "30",
			"-ca", "nomad-agent-ca.pem", "-key", "nomad-agent-ca-key.pem"},
			"eu-server-nomad.pem", "eu-server-nomad-key.pem",
			[]string{"server.eu.nomad", "localhost", "s1.server.eu.nomad", "nomad.example.com"}, []string{"127.0.0.1", "10.0.0.7"}, "==> Using CA file nomad-agent-ca.pem and CA key nomad-agent-ca-key.pem"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out, errOut := runCmd(append([]string{"tls", "cert", "create"}, tc.args...)...)
			if code != exitOK {
				t.Fatalf("exit %d, %q; want 0", code, errOut)
			}
			mustContainStr(t, out, tc.wantOut)
			wantMode(t, tc.certFile, 0o644)
			wantMode(t, tc.keyFile, 0o600)
			pair, err := tls.LoadX509KeyPair(tc.certFile, tc.keyFile)
			if err != nil {
				t.Fatalf("the certificate and key do not load: %v", err)
			}
			leaf := pair.Leaf
			if !slices.Equal(leaf.DNSNames, tc.wantDNS) {
				t.Errorf("DNSNames = %q; want %q", leaf.DNSNames, tc.wantDNS)
			}
			var ips []string
			for _, ip := range leaf.IPAddresses {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(ips, tc.wantIPs) {
				t.Errorf("IPAddresses = %q; want %q", ips, tc.wantIPs)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: tc.wantDNS[0], KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				t.Errorf("Verify = %v; want the CA to vouch for %s", err, tc.wantDNS[0])
			}
		})
	}
}

func TestTLSCommand_BadInput(t *testing.T) {
	t.Chdir(t.TempDir())
	if code, _, errOut := runCmd("tls", "ca", "create"); code != exitOK {
		t.Fatalf("tls ca create = %d %q", code, errOut)
	}
	if code, _, errOut := runCmd("tls", "cert", "create", "-client"); code != exitOK {
		t.Fatalf("tls cert create -client = %d %q", code, errOut)
	}
	before, _ := os.ReadFile("global-client-nomad.pem")
	for _, tc := range []struct {
		args     []string
		wantCode int
		wantErr  string
	}{
		{[]string{"tls"}, exitUsage, "Usage: tether tls"},
		{[]string{"tls", "ca"}, exitUsage, "Usage: tether tls"},
		{[]string{"tls", "cert", "delete"}, exitUsage, "Usage: tether tls"},
		{[]string{"tls", "ca", "create"}, exitError, "nomad-agent-ca.pem already exists"},
		{[]string{"tls", "ca", "create", "-days", "0", "-domain", "other"}, exitUsage, "-days must be positive"},
		{[]string{"tls", "ca", "create", "extra"}, exitUsage, "unexpected arguments: extra"},
		{[]string{"tls", "cert", "create"}, exitUsage, "one of -server, -client or -cli is required"},
		{[]string{"tls", "cert", "create", "-server", "-client"}, exitUsage, "only one of -server, -client and -cli"},
		{[]string{"tls", "cert", "create", "-client"}, exitError, "global-client-nomad.pem already exists"},
		{[]string{"tls", "cert", "create", "-cli", "-node", "x"}, exitUsage, "-node is only valid with -server"},
		{[]string{"tls", "cert", "create", "-server", "-additional-ipaddress", "ten"}, exitUsage, `-additional-ipaddress "ten" is not an IP address`},
		{[]string{"tls", "cert", "create", "-server", "-ca", "nope.pem"}, exitError, "reading CA file (-ca)"},
		{[]string{"tls", "cert", "create", "-server", "-key", "nope.pem"}, exitError, "reading CA key file (-key)"},
		{[]string{"tls", "cert", "create", "-server", "-key", "global-client-nomad-key.pem"}, exitError, "CA key does not match the CA certificate"},
		{[]string{"tls", "cert", "create", "-server", "-bogus"}, exitUsage, "flag provided but not defined: -bogus"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, _, errOut := runCmd(tc.args...)
			if code != tc.wantCode {
				t.Errorf("exit %d; want %d (stderr %q)", code, tc.wantCode, errOut)
			}
			mustContainStr(t, errOut, tc.wantErr)
		})
	}
	if after, _ := os.ReadFile("global-client-nomad.pem"); !bytes.Equal(before, after) {
		t.Fatal("a failed command changed an existing certificate")
	}
	if _, err := os.Stat("global-server-nomad.pem"); err == nil {
		t.Fatal("a failed command left a server certificate behind")
	}
	if code, out, _ := runCmd("tls", "-h"); code != exitOK || !strings.Contains(out, "tether tls cert create -server") {
		t.Fatalf("tls -h = %d %q; want the usage on stdout", code, out)
	}
	if code, out, _ := runCmd("tls", "cert", "create", "-h"); code != exitOK || !strings.Contains(out, "-additional-dnsname") {
		t.Fatalf("tls cert create -h = %d %q; want the flags on stdout", code, out)
	}
}

func mustContainStr(t *testing.T, got, want string) {
	t.Helper()
	if !strings.Contains(got, want) {
		t.Fatalf("got %q; want it to contain %q", got, want)
	}
}

func wantMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	want &^= umask(t)
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s mode = %v; want %v", path, got, want)
	}
}

// umask returns the process umask, which new files go through: a file
// created with mode 0777 shows it.
func umask(t *testing.T) os.FileMode {
	t.Helper()
	p := filepath.Join(t.TempDir(), "probe")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o777)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return 0o777 &^ fi.Mode().Perm()
}
