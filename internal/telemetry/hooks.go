package telemetry

import (
	"net"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
)

// KafkaHooks are franz-go's client metrics (kprom) for one client after
// another: the session the loop rebuilds, the case worker's restarted.
// kprom's OnNewClient creates its collectors again, while franz-go may
// still run the closed client's produce and fetch hooks on goroutines of
// their own; KafkaHooks lets those finish before the next client's
// collectors are set up (a read lock per hook call: per request or
// batch, not per record). Pass it to kgo.WithHooks; one client at a time.
type KafkaHooks struct {
	mu sync.RWMutex
	m  *kprom.Metrics
}

var (
	_ kgo.HookNewClient           = (*KafkaHooks)(nil)
	_ kgo.HookClientClosed        = (*KafkaHooks)(nil)
	_ kgo.HookBrokerConnect       = (*KafkaHooks)(nil)
	_ kgo.HookBrokerDisconnect    = (*KafkaHooks)(nil)
	_ kgo.HookBrokerWrite         = (*KafkaHooks)(nil)
	_ kgo.HookBrokerRead          = (*KafkaHooks)(nil)
	_ kgo.HookBrokerE2E           = (*KafkaHooks)(nil)
	_ kgo.HookBrokerThrottle      = (*KafkaHooks)(nil)
	_ kgo.HookProduceBatchWritten = (*KafkaHooks)(nil)
	_ kgo.HookFetchBatchRead      = (*KafkaHooks)(nil)
)

func newKafkaHooks(m *kprom.Metrics) *KafkaHooks { return &KafkaHooks{m: m} }

// OnNewClient implements kgo.HookNewClient.
func (h *KafkaHooks) OnNewClient(cl *kgo.Client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.m.OnNewClient(cl)
}

// OnClientClosed implements kgo.HookClientClosed.
func (h *KafkaHooks) OnClientClosed(cl *kgo.Client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.m.OnClientClosed(cl)
}

// OnBrokerConnect implements kgo.HookBrokerConnect.
func (h *KafkaHooks) OnBrokerConnect(meta kgo.BrokerMetadata, dial time.Duration, conn net.Conn, err error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	h.m.OnBrokerConnect(meta, dial, conn, err)
}

// OnBrokerDisconnect implements kgo.HookBrokerDisconnect.
func (h *KafkaHooks) OnBrokerDisconnect(meta kgo.BrokerMetadata, conn net.Conn) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	h.m.OnBrokerDisconnect(meta, conn)
}

// OnBrokerWrite implements kgo.HookBrokerWrite.
func (h *KafkaHooks) OnBrokerWrite(meta kgo.BrokerMetadata, key int16, bytes int, writeWait, timeToWrite time.Duration, err error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	h.m.OnBrokerWrite(meta, key, bytes, writeWait, timeToWrite, err)
}

// OnBrokerRead implements kgo.HookBrokerRead.
func (h *KafkaHooks) OnBrokerRead(meta kgo.BrokerMetadata, key int16, bytes int, readWait, timeToRead time.Duration, err error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	h.m.OnBrokerRead(meta, key, bytes, readWait, timeToRead, err)
}

// OnBrokerE2E implements kgo.HookBrokerE2E.
func (h *KafkaHooks) OnBrokerE2E(meta kgo.BrokerMetadata, key int16, e2e kgo.BrokerE2E) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	h.m.OnBrokerE2E(meta, key, e2e)
}

// OnBrokerThrottle implements kgo.HookBrokerThrottle.
func (h *KafkaHooks) OnBrokerThrottle(meta kgo.BrokerMetadata, interval time.Duration, throttledAfterResponse bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	h.m.OnBrokerThrottle(meta, interval, throttledAfterResponse)
}

// OnProduceBatchWritten implements kgo.HookProduceBatchWritten.
func (h *KafkaHooks) OnProduceBatchWritten(meta kgo.BrokerMetadata, topic string, partition int32, m kgo.ProduceBatchMetrics) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	h.m.OnProduceBatchWritten(meta, topic, partition, m)
}

// OnFetchBatchRead implements kgo.HookFetchBatchRead.
func (h *KafkaHooks) OnFetchBatchRead(meta kgo.BrokerMetadata, topic string, partition int32, m kgo.FetchBatchMetrics) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	h.m.OnFetchBatchRead(meta, topic, partition, m)
}
