package agent

import (
	"cmp"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"time"
)

// Certificate roles, the middle label of the names Nomad's certificates
// carry: server.<region>.nomad, client.<region>.nomad, cli.<region>.nomad.
const (
	// RoleServer is the role of a server agent's certificate.
	RoleServer = "server"

	// RoleClient is the role of a node agent's certificate.
	RoleClient = "client"

	// RoleCLI is the role of an operator's (API caller's) certificate.
	RoleCLI = "cli"
)

// DefaultTLSDomain is the domain of the certificate names, as Nomad's.
const DefaultTLSDomain = "nomad"

// Default file names and lifetimes of the generated files, the same as
// Nomad's `nomad tls` helpers.
const (
	// DefaultCAFile is the file name of a generated CA certificate.
	DefaultCAFile = "nomad-agent-ca.pem"

	// DefaultCAKeyFile is the file name of a generated CA key.
	DefaultCAKeyFile = "nomad-agent-ca-key.pem"

	// DefaultCADays is the validity of a generated CA, in days.
	DefaultCADays = 1825

	// DefaultCertDays is the validity of a generated certificate, in days.
	DefaultCertDays = 365
)

// CAOptions describes a CA to generate. The zero value is valid: domain
// "nomad", 1825 days, no name constraint.
type CAOptions struct {
	// Domain is the certificate domain; "" means DefaultTLSDomain.
	Domain string

	// CommonName is the CA's subject; "" means "Nomad Agent CA <serial>".
	CommonName string

	// Days is the validity; 0 means DefaultCADays.
	Days int

	// NameConstraint limits the CA to Domain, "localhost" and
	// AdditionalDomains, so that a leaked CA key cannot sign a
	// certificate for any other name.
	NameConstraint bool

	// AdditionalDomains are added to the name constraint.
	AdditionalDomains []string
}

// CertOptions describes an agent or operator certificate to generate.
type CertOptions struct {
	// Role is RoleServer, RoleClient or RoleCLI. It decides the name the
	// certificate carries: <role>.<region>.<domain>.
	Role string

	// Region is the agent's region; "" means "global".
	Region string

	// Domain is the certificate domain; "" means DefaultTLSDomain.
	Domain string

	// Node, for server certificates, adds the name
	// <node>.server.<region>.<domain>.
	Node string

	// Days is the validity; 0 means DefaultCertDays.
	Days int

	// NotBefore is the start of validity; the zero value means now.
	NotBefore time.Time

	// DNSNames and IPAddresses are added to the certificate's names.
	DNSNames    []string
	IPAddresses []net.IP

	// CACert and CAKey are the PEM CA certificate and key that sign the
	// certificate (what GenerateCA returns).
	CACert []byte
	CAKey  []byte
}

// GenerateCA returns a new self-signed CA certificate and its ECDSA P-256
// key, both PEM encoded.
func GenerateCA(o CAOptions) (certPEM, keyPEM []byte, err error) {
	domain := cmp.Or(o.Domain, DefaultTLSDomain)
	days := cmp.Or(o.Days, DefaultCADays)
	if days < 0 {
		return nil, nil, fmt.Errorf("days %d must be positive", days)
	}
	key, serial, skid, err := newKeyMaterial()
	if err != nil {
		return nil, nil, err
	}
	cn := o.CommonName
	if cn == "" {
		cn = "Nomad Agent CA " + serial.String()
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:   cn,
			Organization: []string{"Tether"},
		},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.AddDate(0, 0, days),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		SubjectKeyId:          skid,
		AuthorityKeyId:        skid,
	}
	if o.NameConstraint {
		tmpl.PermittedDNSDomainsCritical = true
		tmpl.PermittedDNSDomains = append([]string{domain, "localhost"}, o.AdditionalDomains...)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("creating CA certificate: %w", err)
	}
	keyPEM, err = encodeECKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// GenerateCert returns a certificate for o.Role signed by o's CA, and its
// ECDSA P-256 key, both PEM encoded. Server and client certificates are
// valid for <role>.<region>.<domain>, "localhost" and 127.0.0.1, CLI
// certificates for cli.<region>.<domain> and "localhost", as Nomad's;
// every role may authenticate as TLS server and TLS client.
func GenerateCert(o CertOptions) (certPEM, keyPEM []byte, err error) {
	if !slices.Contains([]string{RoleServer, RoleClient, RoleCLI}, o.Role) {
		return nil, nil, fmt.Errorf("role %q is invalid; want %s, %s or %s", o.Role, RoleServer, RoleClient, RoleCLI)
	}
	if o.Node != "" && o.Role != RoleServer {
		return nil, nil, errors.New("a node name is only valid for server certificates")
	}
	region := cmp.Or(o.Region, "global")
	domain := cmp.Or(o.Domain, DefaultTLSDomain)
	days := cmp.Or(o.Days, DefaultCertDays)
	if days < 0 {
		return nil, nil, fmt.Errorf("days %d must be positive", days)
	}
	caCert, err := parseCertPEM(o.CACert)
	if err != nil {
		return nil, nil, fmt.Errorf("CA certificate: %w", err)
	}
	if !caCert.IsCA {
		return nil, nil, errors.New("CA certificate is not a CA")
	}
	caKey, err := parseKeyPEM(o.CAKey)
	if err != nil {
		return nil, nil, fmt.Errorf("CA key: %w", err)
	}
	if !publicKeysEqual(caKey.Public(), caCert.PublicKey) {
		return nil, nil, errors.New("CA key does not match the CA certificate")
	}

	name := TLSName(o.Role, region, domain)
	dns := []string{name, "localhost"}
	var ips []net.IP
	if o.Role != RoleCLI {
		ips = append(ips, net.IPv4(127, 0, 0, 1))
	}
	if o.Node != "" {
		dns = append(dns, o.Node+"."+name)
	}
	for _, d := range o.DNSNames {
		if !slices.Contains(dns, d) {
			dns = append(dns, d)
		}
	}
	for _, ip := range o.IPAddresses {
		if !slices.ContainsFunc(ips, ip.Equal) {
			ips = append(ips, ip)
		}
	}

	key, serial, skid, err := newKeyMaterial()
	if err != nil {
		return nil, nil, err
	}
	notBefore := o.NotBefore
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-time.Minute)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             notBefore,
		NotAfter:              notBefore.AddDate(0, 0, days),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:              dns,
		IPAddresses:           ips,
		SubjectKeyId:          skid,
		AuthorityKeyId:        caCert.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("creating certificate: %w", err)
	}
	keyPEM, err = encodeECKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// TLSName returns the name a certificate of role carries in region:
// "<role>.<region>.<domain>" ("server.global.nomad").
func TLSName(role, region, domain string) string {
	return role + "." + region + "." + cmp.Or(domain, DefaultTLSDomain)
}

// CertFileNames returns Nomad's file names for a generated certificate and
// key: "<region>-<role>-<domain>.pem" and "<region>-<role>-<domain>-key.pem".
func CertFileNames(role, region, domain string) (cert, key string) {
	prefix := cmp.Or(region, "global") + "-" + role + "-" + cmp.Or(domain, DefaultTLSDomain)
	return prefix + ".pem", prefix + "-key.pem"
}

// randomSerial returns a random 128-bit serial number.
// newKeyMaterial returns a fresh ECDSA P-256 key, a random serial number
// and the key's subject key ID: what every certificate this file makes
// starts from.
func newKeyMaterial() (*ecdsa.PrivateKey, *big.Int, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("generating key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, nil, err
	}
	skid, err := keyID(key.Public())
	if err != nil {
		return nil, nil, nil, err
	}
	return key, serial, skid, nil
}

func randomSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generating serial number: %w", err)
	}
	return n, nil
}

// keyID is the subject key identifier of pub (a hash of its encoding).
func keyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encoding public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return sum[:20], nil
}

// encodeECKey encodes key as an "EC PRIVATE KEY" PEM block, as Nomad does.
func encodeECKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// parseCertPEM parses the first certificate of a PEM bundle.
func parseCertPEM(b []byte) (*x509.Certificate, error) {
	certs, err := parseCertsPEM(b)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}
