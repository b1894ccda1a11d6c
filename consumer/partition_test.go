package consumer

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/producer"
)

// TestOutputPartitionerIsKafkasButForMarkers: every key but a marker's goes
// where franz-go's default key partitioner (Kafka's) puts it, so alerts,
// dead letters and watch entries keep their partitions; an entry's markers
// all go where its group key goes.
func TestOutputPartitionerIsKafkasButForMarkers(t *testing.T) {
	kafka := kgo.StickyKeyPartitioner(nil).ForTopic("t")
	ours := outputPartitioner().ForTopic("t")
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 3, 6, 12, 50} {
		for i := range 2000 {
			key := make([]byte, rng.IntN(80))
			for j := range key {
				key[j] = byte(rng.IntN(256))
			}
			if i%3 == 0 {
				key = fmt.Appendf(nil, "entry/%012d/user-%d", rng.IntN(1e12), i)
			}
			r := &kgo.Record{Key: key}
			if got, want := ours.Partition(r, n), kafka.Partition(r, n); got != want {
				t.Fatalf("key %q of %d partitions: %d, Kafka's %d", key, n, got, want)
			}
		}
	}
	const alert = "a635daa704d8f07b09b56f392f9a9ad104a4377c90bd736ea0f647acfdd7faca"
	group := kafka.Partition(&kgo.Record{Key: []byte("mark/" + alert + "/")}, 6)
	seen := map[int]bool{}
	for p := range int32(12) {
		key := producer.WatchMarkKey(alert, "cloudtrail.with/slash", p)
		if got := ours.Partition(&kgo.Record{Key: []byte(key)}, 6); got != group {
			t.Errorf("marker %s: partition %d, want its entry's %d", key, got, group)
		}
		seen[kafka.Partition(&kgo.Record{Key: []byte(key)}, 6)] = true
	}
	if len(seen) < 2 {
		t.Errorf("hashed whole, the twelve markers took %d partition(s) of 6: the test shows nothing", len(seen))
	}
}

func TestPlacementKey(t *testing.T) {
	for _, tc := range []struct{ key, want string }{
		{"mark/abc/cloudtrail/3", "mark/abc/"},
		{"mark/abc/", "mark/abc/"},
		{"mark/abc", "mark/abc"},
		{"mark//x", "mark//x"},
		{"entry/123/alice", "entry/123/alice"},
		{"end/123/alice", "entry/123/alice"},
		{"", ""},
	} {
		if got := string(placementKey([]byte(tc.key))); got != tc.want {
			t.Errorf("placementKey(%q) = %q, want %q", tc.key, got, tc.want)
		}
	}
}
