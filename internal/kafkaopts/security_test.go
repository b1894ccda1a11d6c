package kafkaopts

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestCA is a throwaway certificate authority with one server certificate
// for 127.0.0.1, written as PEM files.
type testCA struct {
	CAFile     string
	ServerTLS  *tls.Config
	ClientCert string
	ClientKey  string
}

func newTestCA(t *testing.T) testCA {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "quarantine-watch test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(cn string, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, key
	}
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	serverDER, serverKey := leaf("localhost", x509.ExtKeyUsageServerAuth)
	clientDER, clientKey := leaf("client", x509.ExtKeyUsageClientAuth)
	clientKeyDER, _ := x509.MarshalECPrivateKey(clientKey)
	return testCA{
		CAFile:     write("ca.pem", "CERTIFICATE", caDER),
		ServerTLS:  &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{serverDER}, PrivateKey: serverKey}}},
		ClientCert: write("client.pem", "CERTIFICATE", clientDER),
		ClientKey:  write("client-key.pem", "EC PRIVATE KEY", clientKeyDER),
	}
}

func listTopics(sec Security, brokers []string) error {
	opts, err := sec.Opts()
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(append(opts, kgo.SeedBrokers(brokers...), kgo.RequestRetries(2))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = kadm.NewClient(cl).ListTopics(ctx)
	return err
}

func TestTLSAndSASL(t *testing.T) {
	ca := newTestCA(t)
	for _, mech := range []string{MechanismSCRAM256, MechanismSCRAM512, MechanismPlain} {
		t.Run(mech, func(t *testing.T) {
			cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(ca.ServerTLS), kfake.EnableSASL(),
				kfake.Superuser(mech, "watcher", "s3cret-pass"), kfake.SeedTopics(1, "cloudtrail"))
			if err != nil {
				t.Fatal(err)
			}
			defer cluster.Close()
			brokers := cluster.ListenAddrs()
			good := Security{TLS: true, TLSCAFile: ca.CAFile, SASLMechanism: mech, SASLUsername: "watcher", SASLPassword: "s3cret-pass"}
			if err := listTopics(good, brokers); err != nil {
				t.Fatalf("TLS + %s: %v", mech, err)
			}

			// A wrong password is an error, quickly, not a hang. (kfake
			// drops the connection; Apache Kafka's own message is checked
			// by the integration suite.)
			bad := good
			bad.SASLPassword = "wrong"
			start := time.Now()
			if err := listTopics(bad, brokers); err == nil {
				t.Error("wrong password accepted")
			}
			if time.Since(start) > 15*time.Second {
				t.Errorf("wrong password took %v to fail", time.Since(start))
			}

			// A broker certificate from an unknown CA is refused.
			untrusted := good
			untrusted.TLSCAFile = newTestCA(t).CAFile
			if err := listTopics(untrusted, brokers); err == nil || !strings.Contains(err.Error(), "certificate") {
				t.Errorf("untrusted CA: %v, want a certificate error", err)
			}
		})
	}
}

func TestValidateNamesTheSetting(t *testing.T) {
	for _, c := range []struct {
		sec  Security
		want string
	}{
		{Security{SASLMechanism: "GSSAPI"}, "--sasl-mechanism"},
		{Security{SASLMechanism: MechanismSCRAM512, SASLUsername: "u"}, "--sasl-password"},
		{Security{SASLMechanism: MechanismAWSMSKIAM}, "--tls"},
		{Security{TLS: true, TLSCertFile: "c.pem"}, "--tls-key-file"},
		{Security{TLSCAFile: "ca.pem"}, "without --tls"},
	} {
		if err := c.sec.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error naming %s", c.sec, err, c.want)
		}
	}
	if err := (Security{TLS: true, TLSCAFile: "/no/such/ca.pem"}).Validate(); err != nil {
		t.Errorf("validate reads no files: %v", err)
	}
	if _, err := (Security{TLS: true, TLSCAFile: "/no/such/ca.pem"}).Opts(); err == nil || !strings.Contains(err.Error(), "--tls-ca-file") {
		t.Errorf("missing CA file: %v", err)
	}
}

func TestPasswordNeverPrinted(t *testing.T) {
	sec := Security{SASLMechanism: MechanismSCRAM256, SASLUsername: "u", SASLPassword: "hunter2-very-secret"}
	for _, s := range []string{sec.String(), fmt.Sprintf("%v", sec), fmt.Sprintf("%+v", sec), fmt.Sprint(sec.LogValue())} {
		if strings.Contains(s, "hunter2") {
			t.Errorf("password printed: %s", s)
		}
	}
}

// MSK IAM signs each connection with credentials from the AWS default
// chain; here the chain finds them in the environment.
func TestMSKIAMCredentialsFromDefaultChain(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIAQUARANTINETEST01")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
	t.Setenv("AWS_SESSION_TOKEN", "token")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	auth, err := mskCredentials(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if auth.AccessKey != "AKIAQUARANTINETEST01" || auth.SecretKey != "not-a-real-secret" || auth.SessionToken != "token" {
		t.Errorf("auth = %+v", auth)
	}
	opts, err := Security{TLS: true, SASLMechanism: MechanismAWSMSKIAM}.Opts()
	if err != nil || len(opts) != 2 {
		t.Errorf("MSK IAM options: %d, %v", len(opts), err)
	}
}
