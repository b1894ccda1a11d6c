package kafkatest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestParseBrokers(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []string
		wantErr bool
	}{
		{name: "one", in: "127.0.0.1:9092", want: []string{"127.0.0.1:9092"}},
		{name: "several with spaces", in: " a:1, b:2 ,,c:3", want: []string{"a:1", "b:2", "c:3"}},
		{name: "ipv6", in: "[::1]:9092", want: []string{"[::1]:9092"}},
		{name: "no port", in: "localhost", wantErr: true},
		{name: "empty port", in: "localhost:", wantErr: true},
		{name: "only commas", in: " , ", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseBrokers(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseBrokers(%q) error %v, want error %t", tt.in, err, tt.wantErr)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("ParseBrokers(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestVerdict(t *testing.T) {
	unavailable := fmt.Errorf("%w: Docker does not answer", ErrUnavailable)
	tests := []struct {
		name     string
		err      error
		required bool
		wantSkip bool
	}{
		{name: "no kafka skips", err: unavailable, wantSkip: true},
		{name: "no kafka required fails", err: unavailable, required: true},
		{name: "broken broker fails", err: errors.New("kafkatest: broker did not become ready")},
		{name: "broken broker required fails", err: errors.New("boom"), required: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			skip, msg := verdict(tt.err, tt.required)
			if skip != tt.wantSkip {
				t.Errorf("verdict skip = %t, want %t (%s)", skip, tt.wantSkip, msg)
			}
			if errors.Is(tt.err, ErrUnavailable) && !strings.Contains(msg, HowTo) {
				t.Errorf("message %q does not say how to run the tests", msg)
			}
		})
	}
}

func TestBrokerEnvListensOnLoopbackOnly(t *testing.T) {
	env := BrokerEnv(40001, 40002)
	want := map[string]string{
		"KAFKA_LISTENERS":                "PLAINTEXT://127.0.0.1:40001,CONTROLLER://127.0.0.1:40002",
		"KAFKA_ADVERTISED_LISTENERS":     "PLAINTEXT://127.0.0.1:40001",
		"KAFKA_CONTROLLER_QUORUM_VOTERS": "1@127.0.0.1:40002",
		"KAFKA_PROCESS_ROLES":            "broker,controller",
	}
	checkEnv(t, env, want)
}

// checkEnv checks that env has the values of want, uses only the official
// image's KAFKA_ interface, and names no host but 127.0.0.1 in a listener
// (//host:port) or a voter (id@host:port).
func checkEnv(t *testing.T, env, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
	for k, v := range env {
		if !strings.HasPrefix(k, "KAFKA_") {
			t.Errorf("%s is not in the official image's KAFKA_ interface", k)
		}
		for _, host := range regexp.MustCompile(`(?://|@)([^:,@/]+):`).FindAllStringSubmatch(v, -1) {
			if host[1] != "127.0.0.1" {
				t.Errorf("%s=%s names host %s, not 127.0.0.1", k, v, host[1])
			}
		}
	}
}

func TestName(t *testing.T) {
	legal := regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`) // Kafka's rule for topic names
	seen := map[string]bool{}
	for range 100 {
		n := Name(t, "topic")
		if !legal.MatchString(n) {
			t.Fatalf("Name = %q, not a legal topic name", n)
		}
		if seen[n] {
			t.Fatalf("Name returned %q twice", n)
		}
		seen[n] = true
	}
}

func TestFreePortsDistinct(t *testing.T) {
	ports, err := freePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	if len(ports) != 2 || ports[0] == ports[1] || ports[0] == 0 {
		t.Fatalf("freePorts(2) = %v", ports)
	}
}

func TestExternalClusterRefusesLifecycle(t *testing.T) {
	b := &Broker{addrs: []string{"127.0.0.1:1"}}
	ctx := context.Background()
	for name, f := range map[string]func(context.Context) error{"Kill": b.Kill, "Stop": b.Stop, "Restart": b.Restart} {
		if err := f(ctx); !errors.Is(err, ErrExternal) {
			t.Errorf("%s on an external cluster: %v, want ErrExternal", name, err)
		}
	}
	if err := b.Terminate(ctx); err != nil {
		t.Errorf("Terminate on an external cluster: %v, want nil", err)
	}
}

func TestExternalClusterMustAnswer(t *testing.T) {
	ports, err := freePorts(1) // closed again: nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvBrokers, fmt.Sprintf("127.0.0.1:%d", ports[0]))
	_, err = Start(context.Background(), Options{StartTimeout: time.Second})
	if err == nil || errors.Is(err, ErrUnavailable) {
		t.Fatalf("Start against a dead KAFKA_BROKERS: %v, want a failure that is not ErrUnavailable", err)
	}
}

// TestNoDocker runs this test binary again, acting out a machine without
// Docker and without KAFKA_BROKERS, and checks that a test using Suite skips
// with the how-to line, or fails when QW_REQUIRE_KAFKA=1. A child process is
// needed to see a test fail without failing this one.
func TestNoDocker(t *testing.T) {
	if os.Getenv("KAFKATEST_CHILD") == "1" {
		newProvider = func() (*testcontainers.DockerProvider, error) {
			return nil, errors.New("Cannot connect to the Docker daemon (acted out)")
		}
		var s Suite
		s.Broker(t)
		t.Fatal("Broker returned without Docker")
	}
	tests := []struct {
		name     string
		require  string
		wantFail bool
		wantOut  string
	}{
		{name: "skips", wantOut: "--- SKIP: TestNoDocker"},
		{name: "required fails", require: "1", wantFail: true, wantOut: "--- FAIL: TestNoDocker"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestNoDocker$", "-test.v")
			cmd.Env = append(withoutEnv(os.Environ(), EnvBrokers, EnvRequire),
				"KAFKATEST_CHILD=1",
				EnvRequire+"="+tt.require,
			)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			if failed := err != nil; failed != tt.wantFail {
				t.Fatalf("child failed = %t (%v), want %t; output:\n%s", failed, err, tt.wantFail, out.String())
			}
			if !strings.Contains(out.String(), tt.wantOut) || !strings.Contains(out.String(), "make docker-up kafka-image") {
				t.Fatalf("child output lacks %q or the how-to line:\n%s", tt.wantOut, out.String())
			}
		})
	}
}

func withoutEnv(env []string, names ...string) []string {
	var kept []string
outer:
	for _, kv := range env {
		for _, n := range names {
			if strings.HasPrefix(kv, n+"=") {
				continue outer
			}
		}
		kept = append(kept, kv)
	}
	return kept
}

// TestStopRestartKeepsData starts a broker of its own, stops it gracefully,
// restarts it and reads back what was written before.
func TestStopRestartKeepsData(t *testing.T) {
	if os.Getenv(EnvBrokers) != "" {
		t.Skip("needs a broker that kafkatest starts; KAFKA_BROKERS is set")
	}
	b := StartForTest(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	addrs := b.Brokers()
	if len(addrs) != 1 || !strings.HasPrefix(addrs[0], "127.0.0.1:") {
		t.Fatalf("Brokers() = %v, want one 127.0.0.1 address", addrs)
	}
	topic := Name(t, "topic")
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 1, 1, nil, topic); err != nil {
		t.Fatalf("creating %s: %v", topic, err)
	}
	if err := cl.ProduceSync(ctx, kgo.StringRecord("before")).FirstErr(); err != nil {
		t.Fatalf("producing: %v", err)
	}
	cl.Close()

	if err := b.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("restarted after a graceful stop in %s", b.StartupTime().Round(time.Millisecond))
	if got := b.Brokers(); fmt.Sprint(got) != fmt.Sprint(addrs) {
		t.Fatalf("Brokers() after Restart = %v, want %v", got, addrs)
	}

	cl, err = kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	fs := cl.PollRecords(ctx, 1)
	if err := fs.Err0(); err != nil {
		t.Fatalf("consuming after restart: %v", err)
	}
	if rs := fs.Records(); len(rs) != 1 || string(rs[0].Value) != "before" {
		t.Fatalf("after restart read %d records (%v), want the one written before", len(rs), rs)
	}
}
