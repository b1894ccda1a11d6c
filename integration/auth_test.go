package integration

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/internal/kafkaopts"
	"github.com/quarantine-watch/quarantine-watch/internal/kafkatest"
)

// quarantineEventID is the CloudTrail eventID of the quarantine sample, which
// the finding carries as event.id.
const quarantineEventID = "e7bb4b23-66e1-4656-b607-f575fde3b790"

// secretsDir is where the broker finds its key store and trust store.
const secretsDir = "/etc/kafka/secrets"

// TestTLSSCRAM runs the binary against a real broker that takes clients
// only over TLS with SCRAM-SHA-512 (a SASL_SSL listener) and checks ACLs
// (Kafka's StandardAuthorizer), the usual MSK and self-managed set-up: the
// finding arrives exactly once, the password never reaches the log, a wrong
// password ends start-up with the broker's authentication error, a client
// that trusts another CA is refused at the TLS handshake, a missing right is
// named at start-up, and a right revoked while it runs ends it with the
// topic and the error rather than leaving it alive and idle.
//
// The broker is its own, not the package's shared one, because its
// listeners differ. It also has a PLAINTEXT listener, whose anonymous user
// is a super user, over which the test creates the SCRAM user (no user
// exists yet to authenticate as), its ACLs and the topics, and reads the
// group's offsets.
func TestTLSSCRAM(t *testing.T) {
	if os.Getenv(kafkatest.EnvBrokers) != "" {
		t.Skipf("needs a broker with a SASL_SSL listener that the test configures; %s names an existing cluster", kafkatest.EnvBrokers)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	s := startSCRAMBroker(t)
	adm := kadm.NewClient(newClient(t, s.broker))

	// The credential is stored in the cluster metadata, and the listener
	// knows it once the broker has applied that: wait for a login to work.
	altered, err := adm.AlterUserSCRAMs(ctx, nil, []kadm.UpsertSCRAM{{
		User: s.user, Mechanism: kadm.ScramSha512, Iterations: 8192, Password: s.password,
	}})
	if err == nil {
		err = altered.Error()
	}
	if err != nil {
		t.Fatalf("creating SCRAM-SHA-512 user %s: %v", s.user, err)
	}
	source, alerts := kafkatest.Name(t, "cloudtrail"), kafkatest.Name(t, "alerts")
	dlq := alerts + ".dlq"
	for _, topic := range []string{source, alerts, dlq, alerts + ".watchlist", alerts + ".context"} {
		// One partition each, so that a sentinel record written last is read
		// last (see committedBefore).
		var configs map[string]*string
		if strings.HasSuffix(topic, ".watchlist") {
			configs = watchTopicConfigs
		}
		if _, err := adm.CreateTopic(ctx, 1, 1, configs, topic); err != nil {
			t.Fatalf("creating topic %s: %v", topic, err)
		}
	}
	// The user's rights: everything on the test's topics, groups and
	// transactional ids (all named qw-testtlsscram-...), as an operator
	// would grant it on a prefix; the subtests below take rights away with
	// DENY entries, which win over ALLOW.
	prefix := "qw-" + strings.ToLower(t.Name())
	grant := kadm.NewACLs().Allow("User:" + s.user).AllowHosts().ResourcePatternType(kadm.ACLPatternPrefixed).
		Topics(prefix).Groups(prefix).TransactionalIDs(prefix).Operations(kadm.OpAll)
	if res, err := adm.CreateACLs(ctx, grant); err != nil || firstACLErr(res) != nil {
		t.Fatalf("granting %s its rights: %v %v", s.user, err, firstACLErr(res))
	}
	waitSCRAMLogin(ctx, t, s)

	bin := buildQW(t)

	t.Run("finding exactly once", func(t *testing.T) {
		group := kafkatest.Name(t, "group")
		p := startQW(t, bin, s.password,
			"--brokers", s.saslAddr,
			"--tls", "--tls-ca-file", s.caFile,
			"--sasl-mechanism", kafkaopts.MechanismSCRAM512, "--sasl-username", s.user,
			"--source-topics", source, "--alerts-topic", alerts,
			"--group", group, "--transactional-id", kafkatest.Name(t, "txn"),
			"--metrics-addr", "", "--log-format", "json", "--startup-timeout", "30s",
		)

		quarantine, err := os.ReadFile(filepath.Join("..", "..", "shared", "samples", "02_attach_user_policy_quarantine_v2_panther.json"))
		if err != nil {
			t.Fatal(err)
		}
		normal, err := os.ReadFile(filepath.Join("..", "..", "shared", "samples", "04_assume_role_awsservice_elastic_integrations.json"))
		if err != nil {
			t.Fatal(err)
		}
		producer := s.client(t, s.caFile, s.password)
		if err := producer.ProduceSync(ctx,
			&kgo.Record{Topic: source, Value: quarantine},
			&kgo.Record{Topic: source, Value: normal},
		).FirstErr(); err != nil {
			t.Fatalf("producing to %s over SASL_SSL: %v", source, err)
		}

		// The finding arrives while the process runs...
		waitCtx, waitCancel := context.WithTimeout(ctx, 2*time.Minute)
		first := s.readCommitted(waitCtx, t, alerts, func(*kgo.Record) bool { return true })
		waitCancel()
		if len(first) == 0 {
			t.Fatalf("no finding on %s within 2 minutes; the instance logged:\n%s", alerts, p.log())
		}

		// ...and after a graceful stop, which ends the open transaction, it
		// is there once, the normal record made none, nothing was
		// dead-lettered, and the group has consumed both records.
		if code := p.stop(t, time.Minute); code != 0 {
			t.Fatalf("exit code %d after SIGTERM, want 0; the instance logged:\n%s", code, p.log())
		}
		findings := s.committedBefore(ctx, t, alerts)
		if len(findings) != 1 {
			t.Fatalf("%s holds %d committed findings, want exactly 1: %s", alerts, len(findings), recordValues(findings))
		}
		var doc struct {
			Event struct{ Kind, ID string }
		}
		if err := json.Unmarshal(findings[0].Value, &doc); err != nil || doc.Event.Kind != "alert" || doc.Event.ID != quarantineEventID {
			t.Errorf("finding is not the alert for event %s (%v): %s", quarantineEventID, err, findings[0].Value)
		}
		if dead := s.committedBefore(ctx, t, dlq); len(dead) != 0 {
			t.Errorf("%s holds %d records, want none: %s", dlq, len(dead), recordValues(dead))
		}
		offsets, err := adm.FetchOffsets(ctx, group)
		if err != nil {
			t.Fatalf("fetching the offsets of group %s: %v", group, err)
		}
		if o, ok := offsets.Lookup(source, 0); !ok || o.Err != nil || o.At != 2 {
			t.Errorf("group %s committed %s[0] at %+v (found %t), want 2: both records consumed", group, source, o, ok)
		}

		out := p.log()
		if strings.Contains(out, s.password) {
			t.Errorf("the password appears in the instance's log:\n%s", out)
		}
		// The start-up line prints the security settings: proof that the
		// check above looked at a log that had the chance to leak it.
		if !strings.Contains(out, `"sasl_password":"[redacted]"`) {
			t.Errorf(`the instance's log lacks the redacted security settings ("sasl_password":"[redacted]"):`+"\n%s", out)
		}
	})

	t.Run("wrong password", func(t *testing.T) {
		const startupTimeout = 20 * time.Second
		wrong := "wrong-" + s.password
		began := time.Now()
		p := startQW(t, bin, wrong,
			"--brokers", s.saslAddr,
			"--tls", "--tls-ca-file", s.caFile,
			"--sasl-mechanism", kafkaopts.MechanismSCRAM512, "--sasl-username", s.user,
			"--source-topics", source, "--alerts-topic", alerts,
			"--group", kafkatest.Name(t, "group"), "--transactional-id", kafkatest.Name(t, "txn"),
			"--metrics-addr", "", "--log-format", "json", "--startup-timeout", startupTimeout.String(),
		)
		code, exited := p.wait(startupTimeout + 30*time.Second)
		took := time.Since(began)
		out := p.log()
		if !exited {
			t.Fatalf("still running %s after start with a wrong password (--startup-timeout %s); it logged:\n%s", took.Round(time.Millisecond), startupTimeout, out)
		}
		t.Logf("exit code %d after %s: %s", code, took.Round(time.Millisecond), lastLine(out))
		if code == 0 {
			t.Errorf("exit code 0 with a wrong password; it logged:\n%s", out)
		}
		// A little over the timeout for starting and stopping the process.
		if took > startupTimeout+5*time.Second {
			t.Errorf("took %s to give up, want at most --startup-timeout %s", took.Round(time.Millisecond), startupTimeout)
		}
		// Kafka's own words, passed on by franz-go: the error code and the
		// broker's message.
		for _, want := range []string{"SASL_AUTHENTICATION_FAILED", "invalid credentials with SASL mechanism SCRAM-SHA-512"} {
			if !strings.Contains(out, want) {
				t.Errorf("the error does not say %q; it logged:\n%s", want, out)
			}
		}
		if strings.Contains(out, wrong) {
			t.Errorf("the password appears in the instance's log:\n%s", out)
		}
	})

	t.Run("missing right named at start-up", func(t *testing.T) {
		denied := kafkatest.Name(t, "denied-source")
		if _, err := adm.CreateTopic(ctx, 1, 1, nil, denied); err != nil {
			t.Fatal(err)
		}
		deny := kadm.NewACLs().Deny("User:" + s.user).DenyHosts().Topics(denied).Operations(kadm.OpAll)
		if res, err := adm.CreateACLs(ctx, deny); err != nil || firstACLErr(res) != nil {
			t.Fatalf("denying %s: %v %v", denied, err, firstACLErr(res))
		}
		p := startQW(t, bin, s.password,
			"--brokers", s.saslAddr, "--tls", "--tls-ca-file", s.caFile,
			"--sasl-mechanism", kafkaopts.MechanismSCRAM512, "--sasl-username", s.user,
			"--source-topics", denied, "--alerts-topic", alerts,
			"--group", kafkatest.Name(t, "group"), "--transactional-id", kafkatest.Name(t, "txn"),
			"--metrics-addr", "", "--log-format", "json", "--startup-timeout", "20s",
		)
		code, exited := p.wait(40 * time.Second)
		out := p.log()
		if !exited || code == 0 {
			t.Fatalf("exited %v with code %d, want a failed start-up; it logged:\n%s", exited, code, out)
		}
		for _, want := range []string{strconv.Quote(denied), "TOPIC_AUTHORIZATION_FAILED", "grant the user Read on it"} {
			if !strings.Contains(out, want) {
				t.Errorf("the error does not say %s; it logged:\n%s", want, out)
			}
		}
		t.Logf("start-up refused: %s", lastLine(out))
	})

	t.Run("read revoked while running", func(t *testing.T) {
		src := kafkatest.Name(t, "source")
		if _, err := adm.CreateTopic(ctx, 1, 1, nil, src); err != nil {
			t.Fatal(err)
		}
		group := kafkatest.Name(t, "group")
		p := startQW(t, bin, s.password,
			"--brokers", s.saslAddr, "--tls", "--tls-ca-file", s.caFile,
			"--sasl-mechanism", kafkaopts.MechanismSCRAM512, "--sasl-username", s.user,
			"--source-topics", src, "--alerts-topic", alerts,
			"--group", group, "--transactional-id", kafkatest.Name(t, "txn"),
			"--log-format", "json", "--startup-timeout", "30s", "--metrics-addr", "127.0.0.1:0",
		)
		producer := s.client(t, s.caFile, s.password)
		normal, err := os.ReadFile(filepath.Join("..", "..", "shared", "samples", "04_assume_role_awsservice_elastic_integrations.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := producer.ProduceSync(ctx, &kgo.Record{Topic: src, Value: normal}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		waitGroupCommitted(ctx, t, adm, group, src, 1)
		deny := kadm.NewACLs().Deny("User:" + s.user).DenyHosts().Topics(src).Operations(kadm.OpRead)
		if res, err := adm.CreateACLs(ctx, deny); err != nil || firstACLErr(res) != nil {
			t.Fatalf("revoking Read on %s: %v %v", src, err, firstACLErr(res))
		}
		// Nothing more is written: the revocation shows only in its fetches,
		// which fail, and the session would retry them for ever.
		revoked := time.Now()
		code, exited := p.wait(time.Minute)
		out := p.log()
		if !exited {
			t.Fatalf("still running a minute after Read on its source was revoked, reading nothing; it logged:\n%s", out)
		}
		t.Logf("exited with code %d %v after Read was revoked: %s", code, time.Since(revoked).Round(time.Millisecond), lastLine(out))
		for _, want := range []string{strconv.Quote(src), "TOPIC_AUTHORIZATION_FAILED"} {
			if code == 0 || !strings.Contains(lastLine(out), want) {
				t.Errorf("exit code %d, last words do not say %s; it logged:\n%s", code, want, out)
			}
		}
	})

	t.Run("untrusted CA", func(t *testing.T) {
		cl := s.client(t, s.otherCAFile, s.password)
		reqCtx, reqCancel := context.WithTimeout(ctx, 30*time.Second)
		defer reqCancel()
		_, err := kadm.NewClient(cl).ListTopics(reqCtx)
		var unknown x509.UnknownAuthorityError
		if !errors.As(err, &unknown) {
			t.Fatalf("listing topics trusting another CA: got %v (%T), want x509.UnknownAuthorityError", err, err)
		}
		t.Logf("refused as wanted: %v", err)
	})
}

// scramBroker is a broker with a SASL_SSL listener for clients and the SCRAM
// user the test creates.
type scramBroker struct {
	broker      *kafkatest.Broker
	saslAddr    string // host:port of the SASL_SSL listener
	caFile      string // the CA that signed the broker's certificate
	otherCAFile string // a CA that signed nothing the broker shows
	user        string
	password    string
}

// startSCRAMBroker writes the broker's PEM key store and trust store, and
// starts a broker with them mounted and three listeners on 127.0.0.1:
// PLAINTEXT (Brokers), CONTROLLER, and SASL_SSL with SCRAM-SHA-512 and
// SCRAM-SHA-256.
func startSCRAMBroker(t *testing.T) *scramBroker {
	t.Helper()
	dir := t.TempDir()
	// The broker runs as another user than the test and reads these
	// throwaway files through a bind mount.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ca, caKey := newTestCA(t, "quarantine-watch test CA")
	other, _ := newTestCA(t, "some other CA")
	certDER, key := newTestServerCert(t, ca, caKey)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	// A PEM key store is the unencrypted PKCS#8 key followed by the chain.
	keystore := pemBlocks(
		&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER},
		&pem.Block{Type: "CERTIFICATE", Bytes: certDER},
		&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw},
	)
	s := &scramBroker{
		caFile:      writeTestFile(t, dir, "ca.pem", pemBlocks(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})),
		otherCAFile: writeTestFile(t, dir, "other-ca.pem", pemBlocks(&pem.Block{Type: "CERTIFICATE", Bytes: other.Raw})),
		user:        "quarantine-watch",
		password:    scramPassword(t),
	}
	writeTestFile(t, dir, "broker.pem", keystore)

	ports := freeTCPPorts(t, 3)
	plain, controller, secure := ports[0], ports[1], ports[2]
	s.saslAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(secure))
	const scramLogin = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
	env := map[string]string{
		"KAFKA_LISTENERS": fmt.Sprintf("PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d,SASL_SSL://127.0.0.1:%d",
			plain, controller, secure),
		"KAFKA_ADVERTISED_LISTENERS":           fmt.Sprintf("PLAINTEXT://127.0.0.1:%d,SASL_SSL://127.0.0.1:%d", plain, secure),
		"KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL",
		"KAFKA_SASL_ENABLED_MECHANISMS":        "SCRAM-SHA-512,SCRAM-SHA-256",
		// listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config: "__" is
		// "_" and "___" is "-" in the image's interface.
		"KAFKA_LISTENER_NAME_SASL__SSL_SCRAM___SHA___512_SASL_JAAS_CONFIG": scramLogin,
		"KAFKA_LISTENER_NAME_SASL__SSL_SCRAM___SHA___256_SASL_JAAS_CONFIG": scramLogin,
		"KAFKA_SSL_KEYSTORE_TYPE":       "PEM",
		"KAFKA_SSL_KEYSTORE_LOCATION":   secretsDir + "/broker.pem",
		"KAFKA_SSL_TRUSTSTORE_TYPE":     "PEM",
		"KAFKA_SSL_TRUSTSTORE_LOCATION": secretsDir + "/ca.pem",
		// ACLs, as a production cluster checks them. The PLAINTEXT and
		// controller listeners' anonymous user is the super user.
		"KAFKA_AUTHORIZER_CLASS_NAME": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
		"KAFKA_SUPER_USERS":           "User:ANONYMOUS",
	}
	s.broker = kafkatest.StartForTest(t, kafkatest.Options{
		Ports:  [2]int{plain, controller},
		Mounts: map[string]string{secretsDir: dir},
		Env:    env,
	})
	return s
}

// client returns a client of the SASL_SSL listener, built the way the
// binary builds it (kafkaopts.Security), trusting caFile and logging in as
// the test's user with password.
func (s *scramBroker) client(t *testing.T, caFile, password string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	sec := kafkaopts.Security{
		TLS: true, TLSCAFile: caFile,
		SASLMechanism: kafkaopts.MechanismSCRAM512, SASLUsername: s.user, SASLPassword: password,
	}
	secOpts, err := sec.Opts()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(append(append([]kgo.Opt{kgo.SeedBrokers(s.saslAddr)}, secOpts...), opts...)...)
	if err != nil {
		t.Fatalf("creating SASL_SSL client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// waitSCRAMLogin waits until the test's user can log in on the SASL_SSL
// listener.
func waitSCRAMLogin(ctx context.Context, t *testing.T, s *scramBroker) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		cl := s.client(t, s.caFile, s.password)
		tctx, tcancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := kadm.NewClient(cl).ListTopics(tctx)
		tcancel()
		cl.Close()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("user %s cannot log in on %s: %v\nlast broker log lines:\n%s",
				s.user, s.saslAddr, err, s.broker.LogTail(context.Background(), 40))
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// readCommitted reads topic from the start over SASL_SSL as a read_committed
// consumer, until done returns true for a record or ctx ends, and returns
// the records read, the last one included.
func (s *scramBroker) readCommitted(ctx context.Context, t *testing.T, topic string, done func(*kgo.Record) bool) []*kgo.Record {
	t.Helper()
	cl := s.client(t, s.caFile, s.password,
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)
	defer cl.Close()
	var got []*kgo.Record
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return got
		}
		fs.EachError(func(topic string, p int32, err error) {
			t.Fatalf("consuming %s[%d]: %v", topic, p, err)
		})
		stop := false
		fs.EachRecord(func(r *kgo.Record) {
			if stop {
				return
			}
			got = append(got, r)
			stop = done(r)
		})
		if stop {
			return got
		}
	}
}

// committedBefore writes a sentinel record to topic, which has one
// partition, and returns the committed records before it: once the
// sentinel is read, every transaction that wrote earlier has been decided.
func (s *scramBroker) committedBefore(ctx context.Context, t *testing.T, topic string) []*kgo.Record {
	t.Helper()
	sentinel := []byte(kafkatest.Name(t, "sentinel"))
	if err := s.client(t, s.caFile, s.password).ProduceSync(ctx, &kgo.Record{Topic: topic, Key: sentinel}).FirstErr(); err != nil {
		t.Fatalf("producing the sentinel to %s: %v", topic, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	got := s.readCommitted(ctx, t, topic, func(r *kgo.Record) bool { return bytes.Equal(r.Key, sentinel) })
	if n := len(got); n == 0 || !bytes.Equal(got[n-1].Key, sentinel) {
		t.Fatalf("the sentinel did not come back from %s within 2 minutes; read %d records", topic, n)
	}
	return got[:len(got)-1]
}

func recordValues(rs []*kgo.Record) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "\n  offset %d: %.300s", r.Offset, r.Value)
	}
	return b.String()
}

// buildQW builds quarantine-watch into a temporary directory.
func buildQW(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command builds the binary under test: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "quarantine-watch")
	cmd := exec.Command(goTool, "build", "-o", bin, "github.com/quarantine-watch/quarantine-watch/cmd/quarantine-watch")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// qwProcess is a running `quarantine-watch run`.
type qwProcess struct {
	cmd  *exec.Cmd
	out  *lockedBuffer // stdout and stderr
	done chan struct{}
	code int
}

// startQW starts `bin run args...` with the SASL password in
// QW_SASL_PASSWORD, as the README asks, and none of the caller's other QW_
// variables. It is killed when the test ends, if still running.
func startQW(t *testing.T, bin, password string, args ...string) *qwProcess {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"run"}, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "QW_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "QW_SASL_PASSWORD="+password)
	p := &qwProcess{cmd: cmd, out: new(lockedBuffer), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	go func() {
		defer close(p.done)
		err := cmd.Wait()
		var exit *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &exit):
			p.code = exit.ExitCode()
		default:
			p.code = -1
			fmt.Fprintf(p.out, "\n(waiting for the process: %v)\n", err)
		}
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// wait waits up to d for the process to exit, and returns its exit code
// (-1 when killed by a signal) and whether it exited.
func (p *qwProcess) wait(d time.Duration) (int, bool) {
	select {
	case <-p.done:
		return p.code, true
	case <-time.After(d):
		return 0, false
	}
}

// stop sends SIGTERM and waits up to d for the exit code; it fails the test
// if the process is still running then.
func (p *qwProcess) stop(t *testing.T, d time.Duration) int {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	code, exited := p.wait(d)
	if !exited {
		t.Fatalf("still running %s after SIGTERM; it logged:\n%s", d, p.log())
	}
	return code
}

func (p *qwProcess) log() string { return p.out.String() }

// lockedBuffer is a bytes.Buffer that the process writes to while the test
// reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newTestCA returns a self-signed CA certificate, valid for an hour around now,
// and its key.
func newTestCA(t *testing.T, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: certSerial(t), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return ca, key
}

// newTestServerCert returns a server certificate for 127.0.0.1 and localhost,
// signed by ca, and its key.
func newTestServerCert(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: certSerial(t), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

func certSerial(t *testing.T) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func pemBlocks(blocks ...*pem.Block) []byte {
	var b []byte
	for _, block := range blocks {
		b = append(b, pem.EncodeToMemory(block)...)
	}
	return b
}

func writeTestFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func scramPassword(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "pw-" + hex.EncodeToString(b)
}

// freeTCPPorts returns n distinct ports that were free on 127.0.0.1, all held
// open together so that none is returned twice.
func freeTCPPorts(t *testing.T, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// lastLine returns the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

func firstACLErr(res kadm.CreateACLsResults) error {
	for _, r := range res {
		if r.Err != nil {
			return r.Err
		}
	}
	return nil
}

// waitGroupCommitted waits until group has committed offset at of topic's
// partition 0.
func waitGroupCommitted(ctx context.Context, t *testing.T, adm *kadm.Client, group, topic string, at int64) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		offsets, err := adm.FetchOffsets(ctx, group)
		if o, ok := offsets.Lookup(topic, 0); err == nil && ok && o.At >= at {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s has not committed %s[0] at %d within a minute (%v)", group, topic, at, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
