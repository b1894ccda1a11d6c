// Package kafkaopts turns connection settings (TLS, SASL PLAIN, SCRAM,
// AWS MSK IAM) into franz-go options. It holds no client and opens no
// connection; the consumer appends its options to its own.
package kafkaopts

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/aws"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// SASL mechanisms.
const (
	MechanismPlain     = "PLAIN"
	MechanismSCRAM256  = "SCRAM-SHA-256"
	MechanismSCRAM512  = "SCRAM-SHA-512"
	MechanismAWSMSKIAM = "AWS_MSK_IAM"
)

// Security is how to connect to the brokers.
type Security struct {
	TLS                   bool
	TLSCAFile             string // PEM; default: the system's roots
	TLSCertFile           string // PEM client certificate, for mutual TLS
	TLSKeyFile            string
	TLSServerName         string // default: the broker's host name
	TLSInsecureSkipVerify bool   // accept any certificate: for tests only

	SASLMechanism string
	SASLUsername  string
	SASLPassword  string // never logged
}

// LogValue keeps the password out of logs.
func (s Security) LogValue() slog.Value {
	password := ""
	if s.SASLPassword != "" {
		password = "[redacted]"
	}
	return slog.GroupValue(
		slog.Bool("tls", s.TLS), slog.String("tls_ca_file", s.TLSCAFile), slog.String("tls_cert_file", s.TLSCertFile),
		slog.String("tls_server_name", s.TLSServerName), slog.Bool("tls_insecure_skip_verify", s.TLSInsecureSkipVerify),
		slog.String("sasl_mechanism", s.SASLMechanism), slog.String("sasl_username", s.SASLUsername),
		slog.String("sasl_password", password),
	)
}

// String is LogValue for fmt.
func (s Security) String() string { return s.LogValue().String() }

// Validate names the first setting that is wrong.
func (s Security) Validate() error {
	switch strings.ToUpper(s.SASLMechanism) {
	case "":
	case MechanismPlain, MechanismSCRAM256, MechanismSCRAM512:
		if s.SASLUsername == "" || s.SASLPassword == "" {
			return fmt.Errorf("--sasl-mechanism %s needs --sasl-username and --sasl-password", s.SASLMechanism)
		}
	case MechanismAWSMSKIAM:
		if !s.TLS {
			return errors.New("--sasl-mechanism AWS_MSK_IAM needs --tls: MSK serves IAM authentication over TLS only")
		}
	default:
		return fmt.Errorf("--sasl-mechanism %q: want PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or AWS_MSK_IAM", s.SASLMechanism)
	}
	if (s.TLSCertFile == "") != (s.TLSKeyFile == "") {
		return errors.New("--tls-cert-file and --tls-key-file go together")
	}
	if !s.TLS && (s.TLSCAFile != "" || s.TLSCertFile != "" || s.TLSServerName != "" || s.TLSInsecureSkipVerify) {
		return errors.New("TLS settings given without --tls")
	}
	return nil
}

// Opts returns the client options for s.
func (s Security) Opts() ([]kgo.Opt, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("kafkaopts: %w", err)
	}
	var opts []kgo.Opt
	if s.TLS {
		cfg, err := s.tlsConfig()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(cfg))
	}
	var mech sasl.Mechanism
	switch strings.ToUpper(s.SASLMechanism) {
	case MechanismPlain:
		mech = plain.Auth{User: s.SASLUsername, Pass: s.SASLPassword}.AsMechanism()
	case MechanismSCRAM256:
		mech = scram.Auth{User: s.SASLUsername, Pass: s.SASLPassword}.AsSha256Mechanism()
	case MechanismSCRAM512:
		mech = scram.Auth{User: s.SASLUsername, Pass: s.SASLPassword}.AsSha512Mechanism()
	case MechanismAWSMSKIAM:
		mech = aws.ManagedStreamingIAM(mskCredentials)
	}
	if mech != nil {
		opts = append(opts, kgo.SASL(mech))
	}
	return opts, nil
}

func (s Security) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         s.TLSServerName,
		InsecureSkipVerify: s.TLSInsecureSkipVerify, //nolint:gosec // opt-in, documented as for tests only
	}
	if s.TLSCAFile != "" {
		pem, err := os.ReadFile(s.TLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("kafkaopts: --tls-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kafkaopts: --tls-ca-file %s: no PEM certificate in it", s.TLSCAFile)
		}
		cfg.RootCAs = pool
	}
	if s.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(s.TLSCertFile, s.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("kafkaopts: --tls-cert-file/--tls-key-file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// mskCredentials is called for every new connection: credentials come from
// the AWS SDK's default chain (environment, shared config and SSO, web
// identity for EKS, ECS and EC2 roles), whose provider caches them and
// refreshes them before they expire.
func mskCredentials(ctx context.Context) (aws.Auth, error) {
	provider, err := awsCredentials(ctx)
	if err != nil {
		return aws.Auth{}, err
	}
	creds, err := provider.Retrieve(ctx)
	if err != nil {
		return aws.Auth{}, fmt.Errorf("kafkaopts: AWS credentials for MSK IAM: %w", err)
	}
	return aws.Auth{
		AccessKey:    creds.AccessKeyID,
		SecretKey:    creds.SecretAccessKey,
		SessionToken: creds.SessionToken,
		UserAgent:    "quarantine-watch",
	}, nil
}
