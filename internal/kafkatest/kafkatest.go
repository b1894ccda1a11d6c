// Package kafkatest runs a real single-node Apache Kafka broker for tests and
// benchmarks: KRaft mode (one process is broker and controller), in a Docker
// container started with testcontainers-go, on host networking with free
// 127.0.0.1 ports, set up for transactions with one replica.
//
// It can kill the broker hard (SIGKILL) and start the same container again on
// the same data and ports, which is what exactly-once tests need.
// StartCluster runs three such nodes as one KRaft cluster (three voters,
// three replicas, min.insync.replicas 2), each of which can be killed and
// restarted alone, for tests of leader and coordinator failover. Setting
// KAFKA_BROKERS makes it use that cluster instead of a container; Kill, Stop
// and Restart then return ErrExternal.
//
// What it deliberately does not do: pull images (the image must be on the
// Docker host; see DefaultImage and LocalImage), create Docker networks
// (it would need a bridge, and every byte must stay on 127.0.0.1), or offer
// TLS and SASL.
package kafkatest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	// DefaultImage is the official Apache Kafka image, used when neither
	// Options.Image nor KAFKA_IMAGE names one and it is on the Docker host.
	DefaultImage = "apache/kafka:4.1.1"

	// LocalImage is the image integration/kafkaimage/build.sh builds without
	// a container registry (`make kafka-image`). It takes the same
	// environment variables as DefaultImage and is used in its place when
	// only LocalImage is on the Docker host.
	LocalImage = "quarantine-watch/kafka:4.1.1"

	// Label marks the containers this package starts, so that containers
	// left behind by a killed test binary can be found:
	// docker rm -f $(docker ps -aq --filter label=quarantine-watch.kafkatest)
	Label = "quarantine-watch.kafkatest"
)

// Environment variables read by this package.
const (
	// EnvBrokers names an existing cluster (host:port, comma separated) to
	// use instead of starting a container.
	EnvBrokers = "KAFKA_BROKERS"
	// EnvImage names the broker image.
	EnvImage = "KAFKA_IMAGE"
	// EnvRequire, set to 1, turns "no Kafka available" from a skip into a
	// test failure. CI sets it.
	EnvRequire = "QW_REQUIRE_KAFKA"
)

// ErrUnavailable is returned by Start when KAFKA_BROKERS is unset and no
// Docker daemon answers: there is no Kafka to test against. Tests skip on it
// unless QW_REQUIRE_KAFKA=1.
var ErrUnavailable = errors.New("kafkatest: no Kafka available")

// ErrExternal is returned by Kill, Stop and Restart on a broker that
// kafkatest did not start (KAFKA_BROKERS).
var ErrExternal = errors.New("kafkatest: not supported on an external cluster (KAFKA_BROKERS)")

// HowTo is the one line that tells a developer how to run the tests that
// need Kafka.
const HowTo = "run `make docker-up kafka-image`, then `KAFKA_IMAGE=" + LocalImage +
	" make test`, or set KAFKA_BROKERS=host:port"

// Options configure Start. The zero value is ready to use.
type Options struct {
	// Image is the broker image. Empty means $KAFKA_IMAGE, else DefaultImage
	// if the Docker host has it, else LocalImage if it has that. The image
	// must be on the Docker host: kafkatest never pulls.
	Image string

	// Env is added to the broker's environment, over the defaults (see
	// BrokerEnv); an empty value removes a default. Keys use the official
	// image's interface: KAFKA_FOO_BAR=x is the broker property foo.bar=x.
	Env map[string]string

	// Ports, if set, are the PLAINTEXT and CONTROLLER ports of
	// BrokerEnv, in that order, instead of free ones that Start picks: a
	// test that adds a listener through Env (KAFKA_LISTENERS) picks every
	// port itself, so that it can name them all. Broker.Brokers is the
	// PLAINTEXT one.
	Ports [2]int

	// Mounts bind-mounts host paths (the values) read-only into the
	// container at container paths (the keys): files the broker reads,
	// such as TLS key stores.
	Mounts map[string]string

	// StartTimeout bounds how long Start and Restart wait for the broker to
	// answer a metadata request. Zero means 3 minutes: a start takes about
	// 10 s on two idle cores, and far longer when the machine is busy.
	StartTimeout time.Duration
}

func (o Options) startTimeout() time.Duration {
	if o.StartTimeout > 0 {
		return o.StartTimeout
	}
	return 3 * time.Minute
}

// Broker is a running broker: a container that kafkatest started, or the
// cluster named by KAFKA_BROKERS.
type Broker struct {
	addrs    []string
	timeout  time.Duration
	image    string
	ctr      testcontainers.Container // nil for an external cluster
	provider *testcontainers.DockerProvider
	lastUp   atomic.Int64 // nanoseconds the last Start or Restart took
}

// Brokers returns the seed addresses, host:port, for kgo.SeedBrokers.
func (b *Broker) Brokers() []string {
	return append([]string(nil), b.addrs...)
}

// External reports whether the broker is the cluster named by KAFKA_BROKERS.
func (b *Broker) External() bool { return b.ctr == nil }

// Image returns the image the broker runs, or "" for an external cluster.
func (b *Broker) Image() string { return b.image }

// Container returns the broker's container, for
// testcontainers.CleanupContainer; nil for an external cluster.
func (b *Broker) Container() testcontainers.Container { return b.ctr }

// StartupTime returns how long the last Start or Restart took, from asking
// Docker to start the container until the broker answered a metadata request.
func (b *Broker) StartupTime() time.Duration { return time.Duration(b.lastUp.Load()) }

// Start starts a broker and waits until it answers a metadata request, or
// checks that the cluster named by KAFKA_BROKERS answers one. It returns an
// error wrapping ErrUnavailable when KAFKA_BROKERS is unset and Docker does
// not answer. On any other error nothing is left running.
func Start(ctx context.Context, opts Options) (*Broker, error) {
	return start(ctx, opts, nil)
}

// StartForTest is Start for one test: the container is removed when tb ends
// (testcontainers.CleanupContainer), and the test is skipped when no Kafka is
// available, or fails if QW_REQUIRE_KAFKA=1. Most tests should share one
// broker per package through Suite instead.
func StartForTest(tb testing.TB, opts Options) *Broker {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opts.startTimeout()+time.Minute)
	defer cancel()
	b, err := start(ctx, opts, func(c testcontainers.Container) {
		testcontainers.CleanupContainer(tb, c)
	})
	if err != nil {
		skipOrFail(tb, err)
	}
	tb.Logf("kafkatest: broker %s (%s) ready in %s", strings.Join(b.addrs, ","), imageOrExternal(b), b.StartupTime().Round(time.Millisecond))
	return b
}

func start(ctx context.Context, opts Options, created func(testcontainers.Container)) (*Broker, error) {
	if v := os.Getenv(EnvBrokers); v != "" {
		return startExternal(ctx, v, opts)
	}

	provider, image, err := dockerHost(ctx, opts.Image)
	if err != nil {
		return nil, err
	}
	ports := opts.Ports[:]
	if opts.Ports == [2]int{} {
		if ports, err = freePorts(2); err != nil {
			return nil, fmt.Errorf("kafkatest: choosing ports: %w", err)
		}
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	env := overlay(BrokerEnv(ports[0], ports[1]), opts.Env)
	b, err := createNode(ctx, provider, image, env, opts.Mounts, addr, opts.startTimeout(), created)
	if err != nil {
		return nil, err
	}
	if err := b.startAndWait(ctx); err != nil {
		terminate(b.ctr)
		return nil, err
	}
	return b, nil
}

// dockerHost connects to Docker, or returns an error wrapping
// ErrUnavailable, and picks the image (see Options.Image).
func dockerHost(ctx context.Context, image string) (*testcontainers.DockerProvider, string, error) {
	// The reaper (Ryuk) is a container whose image would have to be pulled,
	// and kafkatest never pulls: without a say-so from the environment, do
	// without it. Containers are removed by Terminate and CleanupContainer,
	// and carry Label for the rare leftover.
	if os.Getenv("TESTCONTAINERS_RYUK_DISABLED") == "" {
		os.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
	}
	provider, err := newProvider()
	if err != nil {
		return nil, "", fmt.Errorf("%w: no Docker host: %v", ErrUnavailable, err)
	}
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = provider.Health(hctx)
	cancel()
	if err != nil {
		return nil, "", fmt.Errorf("%w: Docker does not answer: %v", ErrUnavailable, err)
	}
	image, err = resolveImage(ctx, provider.Client(), image)
	if err != nil {
		return nil, "", err
	}
	return provider, image, nil
}

// overlay sets the variables of over in env, removing those set to "".
func overlay(env, over map[string]string) map[string]string {
	for k, v := range over {
		if v == "" {
			delete(env, k)
			continue
		}
		env[k] = v
	}
	return env
}

// createNode creates, without starting it, the container of one broker on
// the host network that clients reach at addr.
func createNode(ctx context.Context, provider *testcontainers.DockerProvider, image string, env, mounts map[string]string,
	addr string, timeout time.Duration, created func(testcontainers.Container)) (*Broker, error) {
	req := testcontainers.ContainerRequest{
		Image:  image,
		Env:    env,
		Labels: map[string]string{Label: "1"},
		HostConfigModifier: func(hc *container.HostConfig) {
			hc.NetworkMode = "host"
			for ctrPath, hostPath := range mounts {
				hc.Binds = append(hc.Binds, hostPath+":"+ctrPath+":ro")
			}
		},
	}
	ctr, err := provider.CreateContainer(ctx, req)
	if created != nil && ctr != nil {
		created(ctr)
	}
	if err != nil {
		terminate(ctr)
		return nil, fmt.Errorf("kafkatest: creating the broker container from %s: %w", image, err)
	}
	return &Broker{
		addrs:    []string{addr},
		timeout:  timeout,
		image:    image,
		ctr:      ctr,
		provider: provider,
	}, nil
}

// newProvider connects to Docker. The default provider attaches every
// container to the "bridge" network, or creates a bridge network when the
// daemon has none (as with dockerd --bridge=none). Naming "host" as the
// default network keeps containers on the host network only. Tests replace
// it to act out a machine without Docker.
var newProvider = func() (*testcontainers.DockerProvider, error) {
	return testcontainers.NewDockerProvider(testcontainers.WithDefaultBridgeNetwork("host"))
}

func terminate(ctr testcontainers.Container) {
	if ctr == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = testcontainers.TerminateContainer(ctr, testcontainers.StopContext(ctx))
}

func startExternal(ctx context.Context, list string, opts Options) (*Broker, error) {
	addrs, err := ParseBrokers(list)
	if err != nil {
		return nil, err
	}
	b := &Broker{addrs: addrs, timeout: opts.startTimeout()}
	began := time.Now()
	if err := b.waitReady(ctx); err != nil {
		return nil, fmt.Errorf("kafkatest: %s=%s: %w", EnvBrokers, list, err)
	}
	b.lastUp.Store(int64(time.Since(began)))
	return b, nil
}

// ParseBrokers splits a KAFKA_BROKERS value ("host:port,host:port") into
// addresses, refusing an entry that is not host:port.
func ParseBrokers(list string) ([]string, error) {
	var addrs []string
	for _, a := range strings.Split(list, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
			return nil, fmt.Errorf("kafkatest: %s: %q is not host:port", EnvBrokers, a)
		}
		addrs = append(addrs, a)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("kafkatest: %s=%q names no broker", EnvBrokers, list)
	}
	return addrs, nil
}

// BrokerEnv returns the environment of a single-node KRaft broker (broker
// and controller in one process) listening on 127.0.0.1:port, with its
// controller on 127.0.0.1:controllerPort, in the official image's interface.
func BrokerEnv(port, controllerPort int) map[string]string {
	return map[string]string{
		"KAFKA_NODE_ID":                        "1",
		"KAFKA_PROCESS_ROLES":                  "broker,controller",
		"KAFKA_LISTENERS":                      fmt.Sprintf("PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d", port, controllerPort),
		"KAFKA_ADVERTISED_LISTENERS":           fmt.Sprintf("PLAINTEXT://127.0.0.1:%d", port),
		"KAFKA_CONTROLLER_QUORUM_VOTERS":       fmt.Sprintf("1@127.0.0.1:%d", controllerPort),
		"KAFKA_CONTROLLER_LISTENER_NAMES":      "CONTROLLER",
		"KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
		"KAFKA_INTER_BROKER_LISTENER_NAME":     "PLAINTEXT",
		// One broker: every internal topic has one replica.
		"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":                 "1",
		"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR":         "1",
		"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR":                    "1",
		"KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
		"KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR":            "1",
		// 50 partitions each (the defaults) take seconds to create on two
		// cores the first time a group or a transaction is used.
		"KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS":         "5",
		"KAFKA_TRANSACTION_STATE_LOG_NUM_PARTITIONS": "5",
		"KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS":     "0",
		// Timed-out transactions are aborted within 500 ms of their
		// timeout, not 10 s: a test that no transaction times out must
		// not pass because the broker looked too late.
		"KAFKA_TRANSACTION_ABORT_TIMED_OUT_TRANSACTION_CLEANUP_INTERVAL_MS": "500",
		// Tests create their topics; a typo must not create one.
		"KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
		// In the container's own filesystem, which a stop or kill keeps.
		"KAFKA_LOG_DIRS":  "/tmp/kraft-combined-logs",
		"KAFKA_HEAP_OPTS": "-Xmx512m -Xms256m",
	}
}

// resolveImage picks the image (see Options.Image) and checks that the
// Docker host has it.
func resolveImage(ctx context.Context, cli client.APIClient, image string) (string, error) {
	has := func(name string) (bool, error) {
		_, err := cli.ImageInspect(ctx, name)
		if err == nil {
			return true, nil
		}
		if cerrdefs.IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("kafkatest: inspecting image %s: %w", name, err)
	}
	if image == "" {
		image = os.Getenv(EnvImage)
	}
	if image == "" {
		image = DefaultImage
		ok, err := has(DefaultImage)
		if err != nil {
			return "", err
		}
		if !ok {
			if ok, err := has(LocalImage); err != nil {
				return "", err
			} else if ok {
				image = LocalImage
			}
		}
	}
	ok, err := has(image)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("kafkatest: image %s is not on the Docker host, and kafkatest never pulls: "+
			"build %s with `make kafka-image` and set %s=%s, or `docker pull %s` where a registry is reachable",
			image, LocalImage, EnvImage, LocalImage, DefaultImage)
	}
	return image, nil
}

// freePorts returns n distinct ports that were free on 127.0.0.1. All are
// held open together so that none is returned twice.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func (b *Broker) startAndWait(ctx context.Context) error {
	began := time.Now()
	if err := b.ctr.Start(ctx); err != nil {
		return fmt.Errorf("kafkatest: starting the broker container: %w", err)
	}
	if err := b.waitReady(ctx); err != nil {
		return fmt.Errorf("kafkatest: broker %s (%s) did not become ready: %w\nlast broker log lines:\n%s",
			b.addrs[0], b.image, err, b.LogTail(context.Background(), 40))
	}
	b.lastUp.Store(int64(time.Since(began)))
	return nil
}

// waitReady polls with a metadata request until one lists a broker, the
// container exits, or b.timeout passes.
func (b *Broker) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.addrs...))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var last error
	for {
		if b.ctr != nil {
			st, err := b.ctr.State(ctx)
			if err == nil && !st.Running && st.Status != "created" {
				return fmt.Errorf("the container is %s (exit code %d, OOM killed %t)", st.Status, st.ExitCode, st.OOMKilled)
			}
		}
		tctx, tcancel := context.WithTimeout(ctx, 3*time.Second)
		md, err := adm.BrokerMetadata(tctx)
		tcancel()
		switch {
		case err == nil && len(md.Brokers) > 0:
			return nil
		case err == nil:
			last = errors.New("metadata lists no broker")
		default:
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no metadata within %s: %w", b.timeout, last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Stop stops the broker gracefully (SIGTERM, then SIGKILL after 60 s),
// keeping the container and its data for Restart.
func (b *Broker) Stop(ctx context.Context) error {
	if b.External() {
		return ErrExternal
	}
	timeout := time.Minute
	if err := b.ctr.Stop(ctx, &timeout); err != nil {
		return fmt.Errorf("kafkatest: stopping the broker: %w", err)
	}
	return nil
}

// Kill kills the broker with SIGKILL, as a crash or a power cut would
// (unflushed writes stay in the host's page cache), and returns once the
// container has stopped. The container and its data are kept for Restart.
func (b *Broker) Kill(ctx context.Context) error {
	if b.External() {
		return ErrExternal
	}
	id := b.ctr.GetContainerID()
	if _, err := b.provider.Client().ContainerKill(ctx, id, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		return fmt.Errorf("kafkatest: killing the broker: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		st, err := b.ctr.State(ctx)
		if err != nil {
			return fmt.Errorf("kafkatest: waiting for the killed broker to stop: %w", err)
		}
		if !st.Running {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafkatest: the killed broker still runs: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Restart starts the broker's container again, on the same data and the
// same ports, and waits until it answers a metadata request. A running
// broker is stopped gracefully first. After Kill, the broker takes about
// broker.session.timeout.ms (9 s) longer: the controller first has to
// expire the killed broker's registration.
func (b *Broker) Restart(ctx context.Context) error {
	if b.External() {
		return ErrExternal
	}
	st, err := b.ctr.State(ctx)
	if err != nil {
		return fmt.Errorf("kafkatest: restarting the broker: %w", err)
	}
	if st.Running {
		if err := b.Stop(ctx); err != nil {
			return err
		}
	}
	return b.startAndWait(ctx)
}

// Terminate stops and removes the container with its data. It does nothing
// on an external cluster, and nothing the second time.
func (b *Broker) Terminate(ctx context.Context) error {
	if b == nil || b.External() {
		return nil
	}
	if err := testcontainers.TerminateContainer(b.ctr, testcontainers.StopContext(ctx)); err != nil {
		return fmt.Errorf("kafkatest: removing the broker container: %w", err)
	}
	return nil
}

// LogTail returns the last n lines the broker wrote, for a failure message;
// "" for an external cluster.
func (b *Broker) LogTail(ctx context.Context, n int) string {
	if b.External() {
		return ""
	}
	rc, err := b.ctr.Logs(ctx)
	if err != nil {
		return fmt.Sprintf("(no logs: %v)", err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Sprintf("(reading logs: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Required reports whether QW_REQUIRE_KAFKA asks for Kafka to be there.
func Required() bool {
	v, _ := strconv.ParseBool(os.Getenv(EnvRequire))
	return v
}

// skipOrFail ends a test that has no broker (see verdict).
func skipOrFail(tb testing.TB, err error) {
	tb.Helper()
	skip, msg := verdict(err, Required())
	if skip {
		tb.Skip(msg)
	}
	tb.Fatal(msg)
}

// verdict decides what a test without a broker does: skip, with HowTo, when
// no Kafka is available and none is required; fail otherwise.
func verdict(err error, required bool) (skip bool, msg string) {
	switch {
	case !errors.Is(err, ErrUnavailable):
		return false, err.Error()
	case required:
		return false, fmt.Sprintf("%v, and %s=1 requires it; %s", err, EnvRequire, HowTo)
	default:
		return true, fmt.Sprintf("%v; %s (%s=1 makes this a failure)", err, HowTo, EnvRequire)
	}
}

var nameUnsafe = regexp.MustCompile(`[^a-zA-Z0-9._-]+`)

var nameSeq atomic.Uint64

// Name returns a name for a topic, group or transactional id that no other
// test and no earlier run uses: "qw-<test>-<kind>-<unique>".
func Name(tb testing.TB, kind string) string {
	test := strings.ToLower(nameUnsafe.ReplaceAllString(tb.Name(), "-"))
	if len(test) > 120 {
		test = test[:120]
	}
	return fmt.Sprintf("qw-%s-%s-%x-%d", test, kind, time.Now().UnixNano(), nameSeq.Add(1))
}
