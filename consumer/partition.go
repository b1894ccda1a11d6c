package consumer

import (
	"bytes"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/producer"
)

// outputPartitioner is Kafka's partitioning by key (franz-go's sticky key
// partitioner over murmur2, as the Java client does), except for a watch
// marker, whose key is hashed only up to its entry's alert id
// ("mark/<alert id>/"). An entry's markers, one per source partition, are
// written together: hashed whole they landed on every partition of the
// watchlist topic, and the commit of their transaction had the broker write
// a transaction marker on each, which the next transaction then waited for
// (CONCURRENT_TRANSACTIONS). The placement of a key never changes, so
// compaction keeps the latest of each as before. An end record
// ("end/<account>/<user>") is placed as its entry's key, so that the
// entries a reader of that partition meets after it were written after it.
func outputPartitioner() kgo.Partitioner {
	return kgo.StickyKeyPartitioner(func(key []byte, n int) int {
		return int(murmur2(placementKey(key))&0x7fffffff) % n
	})
}

// placementKey returns what places key: "mark/<alert id>/" for a marker,
// the entry's key for an end record, the whole key otherwise.
func placementKey(key []byte) []byte {
	if entry, ok := producer.EndedWatchKey(key); ok {
		return []byte(entry)
	}
	rest, ok := bytes.CutPrefix(key, []byte(producer.WatchMarkKeyPrefix))
	if !ok {
		return key
	}
	i := bytes.IndexByte(rest, '/')
	if i <= 0 {
		return key
	}
	return key[:len(producer.WatchMarkKeyPrefix)+i+1]
}

// murmur2 is Kafka's hash of keys (Utils.murmur2 of the Java client), which
// franz-go's default partitioner uses and does not export.
func murmur2(b []byte) uint32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	h := seed ^ uint32(len(b))
	for ; len(b) >= 4; b = b[4:] {
		k := uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	switch len(b) {
	case 3:
		h ^= uint32(b[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(b[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(b[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}
