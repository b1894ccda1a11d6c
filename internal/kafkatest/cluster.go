package kafkatest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// ClusterSize is the number of nodes StartCluster starts: the smallest
// KRaft quorum that survives the loss of one voter, and the smallest
// replica set in which min.insync.replicas=2 still accepts writes with one
// replica down.
const ClusterSize = 3

// ClusterOptions configure StartCluster. The zero value is ready to use.
type ClusterOptions struct {
	// Image is the broker image, chosen as Options.Image is.
	Image string

	// Env is added to every node's environment, over ClusterEnv's; an
	// empty value removes a default.
	Env map[string]string

	// StartTimeout bounds how long StartCluster waits for the cluster, and
	// a node's Restart for the node. Zero means 3 minutes.
	StartTimeout time.Duration
}

// Cluster is a KRaft cluster of ClusterSize nodes, each a broker and a
// controller in one container on the host network, with its own 127.0.0.1
// ports. Node i (1-based) is Node(i): a Broker that can be killed, stopped
// and restarted on its own.
type Cluster struct {
	nodes []*Broker // node id i is nodes[i-1]
	addrs []string
}

// ClusterEnv returns the environment of node id (1-based) of a cluster
// whose nodes listen for clients on ports[i][0] and for the controllers on
// ports[i][1] of 127.0.0.1: the single broker's environment (BrokerEnv)
// made for three replicas. Every partition, the internal topics' included,
// has three replicas and accepts a write once two have it; no replica
// outside the in-sync set is ever elected leader.
func ClusterEnv(id int, ports [][2]int) map[string]string {
	env := BrokerEnv(ports[id-1][0], ports[id-1][1])
	var voters []string
	for i, p := range ports {
		voters = append(voters, fmt.Sprintf("%d@127.0.0.1:%d", i+1, p[1]))
	}
	rf := strconv.Itoa(len(ports))
	for k, v := range map[string]string{
		"KAFKA_NODE_ID":                                          strconv.Itoa(id),
		"KAFKA_CONTROLLER_QUORUM_VOTERS":                         strings.Join(voters, ","),
		"KAFKA_DEFAULT_REPLICATION_FACTOR":                       rf,
		"KAFKA_MIN_INSYNC_REPLICAS":                              "2", // __consumer_offsets takes the broker's
		"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":                 rf,
		"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR":         rf,
		"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR":                    "2",
		"KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": rf,
		"KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR":            "2",
		// Kafka's default, said out loud: a test of failover must never
		// pass because a replica that missed writes became leader.
		"KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE": "false",
		// Three JVMs share two cores with the tests: small heaps, the
		// serial collector (no GC threads per core), and the client
		// compiler only, which starts a broker in a fraction of the CPU
		// time that C2's compilations take.
		"KAFKA_HEAP_OPTS":            "-Xmx384m -Xms128m",
		"KAFKA_JVM_PERFORMANCE_OPTS": "-server -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true",
	} {
		env[k] = v
	}
	return env
}

// StartCluster starts a cluster and waits until every node answers and
// the metadata lists them all. On error nothing is left running. With
// KAFKA_BROKERS set it returns ErrExternal: a cluster test kills brokers.
func StartCluster(ctx context.Context, opts ClusterOptions) (*Cluster, error) {
	return startCluster(ctx, opts, nil)
}

// StartClusterForTest is StartCluster for one test: the containers are
// removed when tb ends, and the test is skipped when KAFKA_BROKERS is set
// or no Kafka is available (a failure under QW_REQUIRE_KAFKA=1 in the
// second case).
func StartClusterForTest(tb testing.TB, opts ClusterOptions) *Cluster {
	tb.Helper()
	if os.Getenv(EnvBrokers) != "" {
		tb.Skipf("needs a cluster that kafkatest starts, to kill its brokers; %s is set", EnvBrokers)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Options{StartTimeout: opts.StartTimeout}.startTimeout()+time.Minute)
	defer cancel()
	began := time.Now()
	c, err := startCluster(ctx, opts, func(ctr testcontainers.Container) {
		testcontainers.CleanupContainer(tb, ctr)
	})
	if err != nil {
		skipOrFail(tb, err)
	}
	tb.Logf("kafkatest: cluster %s (%s) ready in %s", strings.Join(c.addrs, ","), c.nodes[0].image, time.Since(began).Round(time.Millisecond))
	return c
}

func startCluster(ctx context.Context, opts ClusterOptions, created func(testcontainers.Container)) (_ *Cluster, err error) {
	if os.Getenv(EnvBrokers) != "" {
		return nil, ErrExternal
	}
	provider, image, err := dockerHost(ctx, opts.Image)
	if err != nil {
		return nil, err
	}
	free, err := freePorts(2 * ClusterSize)
	if err != nil {
		return nil, fmt.Errorf("kafkatest: choosing ports: %w", err)
	}
	ports := make([][2]int, ClusterSize)
	for i := range ports {
		ports[i] = [2]int{free[2*i], free[2*i+1]}
	}
	timeout := Options{StartTimeout: opts.StartTimeout}.startTimeout()
	c := &Cluster{}
	defer func() {
		if err != nil {
			for _, n := range c.nodes {
				terminate(n.ctr)
			}
		}
	}()
	for id := 1; id <= ClusterSize; id++ {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[id-1][0]))
		n, err := createNode(ctx, provider, image, overlay(ClusterEnv(id, ports), opts.Env), nil, addr, timeout, created)
		if err != nil {
			return nil, err
		}
		c.nodes = append(c.nodes, n)
		c.addrs = append(c.addrs, addr)
	}
	// No node is ready before a majority of the controllers runs: start
	// them all, then wait for each.
	for _, n := range c.nodes {
		if err := n.ctr.Start(ctx); err != nil {
			return nil, fmt.Errorf("kafkatest: starting the container of broker %s: %w", n.addrs[0], err)
		}
	}
	began := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(c.nodes))
	for i, n := range c.nodes {
		wg.Go(func() {
			if err := n.waitReady(ctx); err != nil {
				errs[i] = fmt.Errorf("kafkatest: node %d (%s) did not become ready: %w\nlast log lines:\n%s",
					i+1, n.addrs[0], err, n.LogTail(context.Background(), 30))
				return
			}
			n.lastUp.Store(int64(time.Since(began)))
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := c.WaitHealthy(ctx, timeout); err != nil {
		return nil, err
	}
	return c, nil
}

// Brokers returns every node's client address, for kgo.SeedBrokers.
func (c *Cluster) Brokers() []string { return slices.Clone(c.addrs) }

// External reports false: a Cluster is always one that kafkatest started.
func (c *Cluster) External() bool { return false }

// Node returns node id (1-based), to kill, stop or restart it.
func (c *Cluster) Node(id int32) *Broker {
	if id < 1 || int(id) > len(c.nodes) {
		panic(fmt.Sprintf("kafkatest: no node %d in a cluster of %d", id, len(c.nodes)))
	}
	return c.nodes[id-1]
}

// Terminate stops and removes every node with its data.
func (c *Cluster) Terminate(ctx context.Context) error {
	var errs []error
	for _, n := range c.nodes {
		errs = append(errs, n.Terminate(ctx))
	}
	return errors.Join(errs...)
}

// QuorumLeader returns the id of the node that leads the KRaft quorum (the
// active controller), as DescribeQuorum tells it.
func (c *Cluster) QuorumLeader(ctx context.Context) (int32, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.addrs...))
	if err != nil {
		return 0, fmt.Errorf("kafkatest: %w", err)
	}
	defer cl.Close()
	req := kmsg.NewPtrDescribeQuorumRequest()
	t := kmsg.NewDescribeQuorumRequestTopic()
	t.Topic = "__cluster_metadata"
	t.Partitions = []kmsg.DescribeQuorumRequestTopicPartition{kmsg.NewDescribeQuorumRequestTopicPartition()}
	req.Topics = append(req.Topics, t)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return 0, fmt.Errorf("kafkatest: describing the quorum: %w", err)
	}
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
		return 0, fmt.Errorf("kafkatest: describing the quorum: %d topics in the answer", len(resp.Topics))
	}
	p := resp.Topics[0].Partitions[0]
	if p.LeaderID < 1 {
		return 0, fmt.Errorf("kafkatest: describing the quorum: no leader (%d)", p.LeaderID)
	}
	return p.LeaderID, nil
}

// WaitHealthy waits until the metadata lists every node and every
// partition of every topic, the internal ones included, has a leader and
// all its replicas in sync: what a fault test waits for before the next
// fault, so that each fault starts from a whole cluster.
func (c *Cluster) WaitHealthy(ctx context.Context, timeout time.Duration) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.addrs...))
	if err != nil {
		return fmt.Errorf("kafkatest: %w", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		last = c.unhealthy(ctx, cl)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafkatest: the cluster is not whole within %v: %w", timeout, last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// unhealthy says what keeps the cluster from being whole, from a fresh
// metadata request (kadm's metadata is cached for seconds).
func (c *Cluster) unhealthy(ctx context.Context, cl *kgo.Client) error {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	md, err := kmsg.NewPtrMetadataRequest().RequestWith(rctx, cl)
	if err != nil {
		return err
	}
	if len(md.Brokers) != len(c.nodes) {
		return fmt.Errorf("the metadata lists %d brokers of %d", len(md.Brokers), len(c.nodes))
	}
	var short []string
	for _, t := range md.Topics {
		name := "?"
		if t.Topic != nil {
			name = *t.Topic
		}
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
			return fmt.Errorf("topic %s: %w", name, err)
		}
		for _, p := range t.Partitions {
			if p.Leader < 0 || len(p.ISR) < len(p.Replicas) {
				short = append(short, fmt.Sprintf("%s/%d (leader %d, in sync %v of %v)", name, p.Partition, p.Leader, p.ISR, p.Replicas))
			}
		}
	}
	if len(short) > 0 {
		slices.Sort(short)
		if len(short) > 5 {
			short = append(short[:5], fmt.Sprintf("and %d more", len(short)-5))
		}
		return fmt.Errorf("partitions short of replicas: %s", strings.Join(short, ", "))
	}
	return nil
}

// WaitFailedOver waits until the metadata no longer lists node id and no
// partition has it as leader: the cluster has noticed that the node is
// gone (it is fenced once broker.session.timeout.ms passes without a
// heartbeat) and moved its leaderships, and with them its coordinators.
func (c *Cluster) WaitFailedOver(ctx context.Context, id int32, timeout time.Duration) error {
	var seeds []string
	for i, a := range c.addrs {
		if int32(i+1) != id {
			seeds = append(seeds, a)
		}
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...))
	if err != nil {
		return fmt.Errorf("kafkatest: %w", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := errors.New("no metadata yet")
	for {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		md, err := kmsg.NewPtrMetadataRequest().RequestWith(rctx, cl)
		rcancel()
		if err != nil {
			last = err
		} else if led := ledBy(md, id); len(md.Brokers) >= len(c.nodes) || led > 0 {
			last = fmt.Errorf("the metadata lists %d brokers; node %d leads %d partitions", len(md.Brokers), id, led)
		} else {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafkatest: node %d not failed over within %v: %w", id, timeout, last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func ledBy(md *kmsg.MetadataResponse, id int32) int {
	n := 0
	for _, t := range md.Topics {
		for _, p := range t.Partitions {
			if p.Leader == id {
				n++
			}
		}
	}
	return n
}
