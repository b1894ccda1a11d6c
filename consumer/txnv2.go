package consumer

import (
	"context"
	"errors"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Transactions v2 (KIP-890 part 2) bumps the producer epoch with every
// transaction, so that a request of an earlier transaction delivered late
// (after the client gave up on it and went on) is fenced instead of
// committing or aborting the transaction open at that moment, which is what
// v1 lets it do (TestTransactionSafety, docs/reliability.md). Under v2 a
// transaction is opened at the broker by its first write: a produce, or,
// when the batch produced nothing, End's TxnOffsetCommit. Sent within
// milliseconds of the previous EndTxn, while that transaction's markers
// are still being written, that TxnOffsetCommit is answered
// CONCURRENT_TRANSACTIONS, which GroupTransactSession.End treats as
// abortable: the batch is aborted and read again. openForOffsets sends the
// same TxnOffsetCommit first and retries it in place, as franz-go retries
// AddOffsetsToTxn under v1; End's own then finds the transaction open.

// speaksTransactionsV2 reports whether franz-go will use transactions v2
// with this cluster: the cluster finalized transaction.version 2 and it
// serves EndTxn v5, TxnOffsetCommit v5 and Produce v12 (the versions
// ClientOpts leaves franz-go when TransactionsV2 is set). An error is not
// v2: openForOffsets must never run under v1, where a TxnOffsetCommit
// before AddOffsetsToTxn would leave the offsets outside the transaction.
func speaksTransactionsV2(ctx context.Context, cl *kgo.Client) (bool, error) {
	req := kmsg.NewPtrApiVersionsRequest()
	req.ClientSoftwareName = "quarantine-watch"
	req.ClientSoftwareVersion = "1"
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return false, err
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return false, err
	}
	need := map[int16]int16{int16(kmsg.EndTxn): 5, int16(kmsg.TxnOffsetCommit): 5, int16(kmsg.Produce): 12}
	for _, k := range resp.ApiKeys {
		if v, ok := need[k.ApiKey]; ok && k.MaxVersion >= v {
			delete(need, k.ApiKey)
		}
	}
	if len(need) > 0 {
		return false, nil
	}
	for _, f := range resp.FinalizedFeatures {
		if f.Name == "transaction.version" && f.MaxVersionLevel >= 2 {
			return true, nil
		}
	}
	return false, nil
}

// openForOffsetsLimit bounds how long openForOffsets retries before
// leaving the commit to End.
const openForOffsetsLimit = 5 * time.Second

// openForOffsets' retries: the wait is for the broker to finish writing the
// previous transaction's markers, a few milliseconds to a few tens on a
// busy broker, and it is every back-to-back transaction's (the loop under
// steady traffic): fine steps at first, so that the batch does not wait
// long past the moment the broker is done. A retry is one small request.
const (
	openRetryMin = 2 * time.Millisecond
	openRetryMax = 50 * time.Millisecond
)

// openForOffsets sends the TxnOffsetCommit that End is about to send for a
// transaction that produced nothing, retrying it while the broker answers
// CONCURRENT_TRANSACTIONS. Any other outcome is left to End, which sends
// the same request again (committing the same offsets twice in one
// transaction is idempotent) and handles its answer as it always does.
func openForOffsets(ctx context.Context, cl *kgo.Client, transactionalID, group string) {
	offsets := cl.UncommittedOffsets()
	if len(offsets) == 0 {
		return
	}
	id, epoch, err := cl.ProducerID(ctx)
	if err != nil {
		return
	}
	member, generation := cl.GroupMetadata()
	req := kmsg.NewPtrTxnOffsetCommitRequest()
	req.TransactionalID = transactionalID
	req.Group = group
	req.ProducerID, req.ProducerEpoch = id, epoch
	req.MemberID, req.Generation = member, generation
	for topic, partitions := range offsets {
		rt := kmsg.NewTxnOffsetCommitRequestTopic()
		rt.Topic = topic
		for partition, eo := range partitions {
			rp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
			rp.Partition, rp.Offset, rp.LeaderEpoch = partition, eo.Offset, eo.Epoch
			rp.Metadata = &req.MemberID
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
	}
	deadline := time.Now().Add(openForOffsetsLimit)
	for backoff := openRetryMin; ; backoff = min(backoff*3/2, openRetryMax) {
		resp, err := req.RequestWith(ctx, cl)
		if err != nil || !concurrentTransactions(resp) || time.Now().After(deadline) {
			return
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
	}
}

// concurrentTransactions reports whether any partition of resp was
// answered CONCURRENT_TRANSACTIONS.
func concurrentTransactions(resp *kmsg.TxnOffsetCommitResponse) bool {
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if errors.Is(kerr.ErrorForCode(p.ErrorCode), kerr.ConcurrentTransactions) {
				return true
			}
		}
	}
	return false
}
