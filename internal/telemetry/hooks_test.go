package telemetry_test

import (
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/internal/telemetry"
)

// TestKafkaHooksServeOneClientAfterAnother is what a rebuilt session does
// to its metrics: franz-go may still run a closed client's produce and
// fetch hooks (on goroutines of their own) while the next client's
// OnNewClient sets the hooks up again. Under the race detector, hooks that
// do not guard that fail here.
func TestKafkaHooksServeOneClientAfterAnother(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	m := telemetry.New()
	for name, hooks := range map[string]kgo.Hook{"Kafka": m.Kafka, "KafkaContext": m.KafkaContext} {
		t.Run(name, func(t *testing.T) {
			newClient, ok := hooks.(kgo.HookNewClient)
			closed, ok2 := hooks.(kgo.HookClientClosed)
			produced, ok3 := hooks.(kgo.HookProduceBatchWritten)
			fetched, ok4 := hooks.(kgo.HookFetchBatchRead)
			if !ok || !ok2 || !ok3 || !ok4 {
				t.Fatalf("%T lacks a hook the service's metrics need", hooks)
			}
			var clients []*kgo.Client
			for range 3 {
				// The client is only what OnNewClient reads its options
				// from; it is not connected.
				cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
				if err != nil {
					t.Fatal(err)
				}
				defer cl.Close()
				clients = append(clients, cl)
			}
			newClient.OnNewClient(clients[0])
			var wg sync.WaitGroup
			stop := make(chan struct{})
			wg.Go(func() { // the closed client's trailing hooks
				for {
					select {
					case <-stop:
						return
					default:
					}
					produced.OnProduceBatchWritten(kgo.BrokerMetadata{NodeID: 1}, "alerts", 0, kgo.ProduceBatchMetrics{NumRecords: 1, UncompressedBytes: 10, CompressedBytes: 5})
					fetched.OnFetchBatchRead(kgo.BrokerMetadata{NodeID: 1}, "cloudtrail", 0, kgo.FetchBatchMetrics{NumRecords: 1, UncompressedBytes: 10, CompressedBytes: 5})
				}
			})
			for _, cl := range clients[1:] {
				closed.OnClientClosed(cl)
				newClient.OnNewClient(cl)
			}
			close(stop)
			wg.Wait()
			closed.OnClientClosed(clients[len(clients)-1])
		})
	}
}
