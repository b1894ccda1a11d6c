package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/quarantine-watch/quarantine-watch/internal/kafkaproxy"
	"github.com/quarantine-watch/quarantine-watch/internal/kafkatest"
)

// Network faults between the service and the broker, the oracle untouched.
// The broker has a second client listener, SERVICE, which advertises the
// address of a TCP proxy (toxiproxy, embedded in the test process) instead
// of its own: the service is given the proxy as its seed, and the metadata
// it gets back names the proxy again, so every connection it opens
// (bootstrap, partition leader, group and transaction coordinator) goes
// through the proxy. The writer, the readers and the test's admin client
// use the PLAINTEXT listener and never see a fault. One broker, not the
// three of StartCluster: with one broker the proxy stands for the whole
// cluster, so a black hole cuts the service off from every coordinator at
// once, and the run fits in the package's time budget.

// networkBroker starts a broker whose SERVICE listener is reached only
// through a toxiproxy, which it starts first so that it holds its port.
func networkBroker(t *testing.T) (*kafkatest.Broker, *toxiproxy.Proxy) {
	t.Helper()
	// Some toxics log every chunk through zerolog's global logger, at
	// trace level; the test says what it did itself.
	zerolog.SetGlobalLevel(zerolog.WarnLevel)
	var proxy *toxiproxy.Proxy
	b := proxiedBroker(t, func(listen, upstream string) {
		srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
		proxy = toxiproxy.NewProxy(srv, "service", listen, upstream)
		if err := proxy.Start(); err != nil {
			t.Fatalf("starting the proxy: %v", err)
		}
		t.Cleanup(proxy.Stop)
	})
	return b, proxy
}

// proxiedBroker starts a broker with a second client listener, SERVICE,
// which advertises the address a proxy listens on instead of its own: a
// client given that address as its seed reaches the broker only through
// the proxy, every connection of it. startProxy starts the proxy on
// listen, forwarding to upstream (the SERVICE listener), before the
// broker starts.
func proxiedBroker(t *testing.T, startProxy func(listen, upstream string)) *kafkatest.Broker {
	t.Helper()
	ports := freeTCPPorts(t, 4)
	plain, controller, service, proxied := ports[0], ports[1], ports[2], ports[3]
	startProxy(net.JoinHostPort("127.0.0.1", strconv.Itoa(proxied)), net.JoinHostPort("127.0.0.1", strconv.Itoa(service)))
	return kafkatest.StartForTest(t, kafkatest.Options{
		Ports: [2]int{plain, controller},
		Env: map[string]string{
			"KAFKA_LISTENERS": fmt.Sprintf("PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d,SERVICE://127.0.0.1:%d",
				plain, controller, service),
			"KAFKA_ADVERTISED_LISTENERS":           fmt.Sprintf("PLAINTEXT://127.0.0.1:%d,SERVICE://127.0.0.1:%d", plain, proxied),
			"KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SERVICE:PLAINTEXT",
		},
	})
}

// frameBroker starts a broker whose SERVICE listener is reached only
// through a Kafka-frame-aware proxy (kafkaproxy), which it starts first.
func frameBroker(t *testing.T) (*kafkatest.Broker, *kafkaproxy.Proxy) {
	t.Helper()
	var proxy *kafkaproxy.Proxy
	b := proxiedBroker(t, func(listen, upstream string) {
		var err error
		if proxy, err = kafkaproxy.Start(listen, upstream); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			proxy.Close()
			for _, err := range proxy.Errs() {
				t.Errorf("frame proxy: %v", err)
			}
		})
	})
	return b, proxy
}

// seeds is a cluster named by addresses: a proxy's, which the service is
// given instead of the broker's own.
type seeds []string

func (s seeds) Brokers() []string { return s }
func (s seeds) External() bool    { return false }

// networkRun is a dense run whose service talks to the broker through a
// proxy, and the faults done to the proxy.
type networkRun struct {
	*denseRun
	proxy                 *toxiproxy.Proxy
	scenarios, recoveries int
}

// toxic adds a toxic of type typ to both directions of every connection
// through the proxy, present and future.
func (r *networkRun) toxic(typ string, attrs map[string]any) {
	r.t.Helper()
	for _, stream := range []string{"upstream", "downstream"} {
		body, err := json.Marshal(map[string]any{
			"name": typ + "_" + stream, "type": typ, "stream": stream, "toxicity": 1.0, "attributes": attrs,
		})
		if err != nil {
			r.t.Fatal(err)
		}
		if _, err := r.proxy.Toxics.AddToxicJson(bytes.NewReader(body)); err != nil {
			r.t.Fatalf("adding a %s toxic: %v", typ, err)
		}
	}
}

// heal removes every toxic.
func (r *networkRun) heal() { r.proxy.Toxics.ResetToxics(context.Background()) }

// outputs is how many outputs the franz-go reader has seen so far.
func (r *networkRun) outputs() int {
	r.goDuring.mu.Lock()
	defer r.goDuring.mu.Unlock()
	return len(r.goDuring.outs)
}

// scenario runs fault (which lasts as long as it sleeps), heals the
// network and counts a recovery once the group, in the same process of
// instance name, has committed everything written before the fault was
// over (recovered). If mustProgress, outputs must grow during the fault:
// a slow network is no excuse to stop.
func (r *networkRun) scenario(name, what string, mustProgress bool, fault func()) {
	r.t.Helper()
	in := r.instances[name]
	cmd, _ := in.current()
	pid := cmd.Process.Pid
	r.step("scenario %d: %s", r.scenarios+1, what)
	base := r.outputs()
	fault()
	r.heal()
	during := r.outputs() - base
	r.step("scenario %d over, healed: %d outputs during it", r.scenarios+1, during)
	if mustProgress && during == 0 {
		r.t.Errorf("%s: no output during the fault", what)
	}
	r.scenarios++
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if recovered(ctx, r.t, r.adm, r.p, in, pid, what) {
		r.recoveries++
	}
}

// blackHoleOpenTxn black-holes the network the moment the broker shows
// in's transaction open and still shows it open once the black hole is
// in place (else it heals and tries again, up to 20 times), holds it for
// d, and fails the test unless the broker has meanwhile ended that
// transaction itself and bumped the producer epoch: a d below the
// transaction timeout, or a black hole that let the transaction end,
// would prove nothing about a session the broker has fenced.
func (r *networkRun) blackHoleOpenTxn(in *instance, d time.Duration) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var trapped kadm.DescribedTransaction
	for attempt := 1; ; attempt++ {
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			if describeTxn(ctx, r.adm, in.txnID).State == "Ongoing" {
				break
			}
		}
		r.toxic("timeout", map[string]any{"timeout": 0})
		trapped = describeTxn(ctx, r.adm, in.txnID)
		if trapped.State == "Ongoing" {
			break
		}
		r.heal()
		if attempt == 20 {
			r.t.Fatalf("could not black-hole %s with its transaction open in 20 attempts", in.name)
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(d)
	after := describeTxn(ctx, r.adm, in.txnID)
	r.step("black hole on %s's open transaction (producer id %d, epoch %d); before healing the id is %s at epoch %d",
		in.name, trapped.ProducerID, trapped.ProducerEpoch, after.State, after.ProducerEpoch)
	if after.ProducerID == trapped.ProducerID && after.ProducerEpoch <= trapped.ProducerEpoch {
		r.t.Errorf("the broker did not end the trapped transaction within %v: epoch %d, then %d (%s)",
			d, trapped.ProducerEpoch, after.ProducerEpoch, after.State)
	}
}

// TestExactlyOnceNetwork runs the dense oracle with one instance on the
// service's default flags behind a proxy that adds, one after the other,
// latency with jitter, a bandwidth cap, connection resets, and a black
// hole (every byte dropped both ways, connections accepted and kept) of
// 5 s and of 15 s. Then a second instance with --session-timeout 6s and
// --transaction-timeout 12s (at the defaults the fault would last over a
// minute) replaces the first and the network is black-holed for 20 s,
// longer than its transaction timeout: the broker aborts the open
// transaction and fences the epoch, and the instance must rebuild its
// session in process. After each fault the group must catch up in the
// same process; no exit is excused.
func TestExactlyOnceNetwork(t *testing.T) {
	if testing.Short() {
		t.Skip("takes minutes; -short skips it")
	}
	b, proxy := networkBroker(t)
	r := &networkRun{
		denseRun: startDenseRun(t, b, []string{proxy.Listen},
			denseSourceConfig{records: 200_000, chunk: 50, abortEvery: 5, every: 100 * time.Millisecond, seed: 1412}),
		proxy: proxy,
	}
	r.step("start a on the default flags through the proxy %s; the writer starts", proxy.Listen)
	r.start("a")
	r.src.start()
	r.progress(1000, 3*time.Minute)

	r.scenario("a", "latency 100 ms ± 50 ms each way for 15 s", true, func() {
		r.toxic("latency", map[string]any{"latency": 100, "jitter": 50})
		time.Sleep(15 * time.Second)
	})
	r.scenario("a", "bandwidth capped at 100 KB/s each way for 15 s", true, func() {
		r.toxic("bandwidth", map[string]any{"rate": 100})
		time.Sleep(15 * time.Second)
	})
	r.scenario("a", "every connection reset (RST) as it carries data, five times 2 s apart", false, func() {
		for range 5 {
			r.toxic("reset_peer", map[string]any{"timeout": 0})
			time.Sleep(300 * time.Millisecond)
			r.heal()
			time.Sleep(2 * time.Second)
		}
	})
	for _, d := range []time.Duration{5 * time.Second, 15 * time.Second} {
		r.scenario("a", fmt.Sprintf("the broker black-holed for %v", d), false, func() {
			r.toxic("timeout", map[string]any{"timeout": 0})
			time.Sleep(d)
		})
	}

	r.step("replace a with b, whose transaction timeout is 12 s")
	r.stop("a")
	r.extra = []string{"--session-timeout", "6s", "--transaction-timeout", "12s"}
	waitConsuming(t, r.start("b"), time.Minute)
	r.progress(500, 2*time.Minute)
	r.scenario("b", "the broker black-holed for 20 s with a transaction open, longer than the 12 s transaction timeout", false, func() {
		r.blackHoleOpenTxn(r.instances["b"], 20*time.Second)
	})

	r.src.endNow()
	res := r.finish(3 * time.Minute)
	ex := r.unplanned()
	for _, e := range ex {
		t.Errorf("unplanned exit: %s: %s", firstLine(e.line), e.cause)
	}
	t.Logf("what the instances said of their sessions:\n%s\n%s",
		grepLog(r.instances["a"], `"msg":"rebuilding the Kafka session`, `"msg":"session rebuilt"`),
		grepLog(r.instances["b"], `"msg":"rebuilding the Kafka session`, `"msg":"session rebuilt"`))
	line := fmt.Sprintf("eos-network: records=%d outputs=%d aborted_source=%d scenarios=%d recoveries=%d unplanned_exits=%d lost=%d duplicates=%d phantom=%d hanging=%d readers_agree=%t",
		res.records, res.outputs, res.abortedSource, r.scenarios, r.recoveries, len(ex), res.lost, res.duplicates, res.phantom, res.hanging, res.readersAgree)
	t.Log(line)
	fmt.Println(line)
	if r.recoveries != r.scenarios {
		t.Errorf("recovered from %d of %d scenarios", r.recoveries, r.scenarios)
	}
}
