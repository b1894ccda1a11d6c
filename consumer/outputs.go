package consumer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/producer"
)

// unknownMaxMessageBytes is the limit assumed for an output topic whose
// max.message.bytes cannot be read (no DescribeConfigs right): franz-go's
// default batch limit, below Kafka's default.
const unknownMaxMessageBytes = 1_000_012

// maxBatchBytes is the largest batch limit franz-go takes.
const maxBatchBytes = 1 << 30

// outputLimits are the output topics' max.message.bytes, read once at
// start-up. Alerts and dead letters are cut to fit them, and they bound
// franz-go's batches to each topic (ProducerBatchMaxBytesFn), so that no
// record or batch the service writes is larger than its topic takes.
type outputLimits struct {
	// watchlistTopic is "" when the watch is off.
	alertsTopic, dlqTopic, watchlistTopic string
	// most is the largest limit used, whatever the topics take: half the
	// producer's buffer, which refuses a record larger than itself.
	most                   int64
	alerts, dlq, watchlist atomic.Int64
}

func newOutputLimits(alerts, dlq, watchlist string, most int64) *outputLimits {
	l := &outputLimits{alertsTopic: alerts, dlqTopic: dlq, watchlistTopic: watchlist, most: max(min(most, maxBatchBytes), producer.MinMessageBytes)}
	l.alerts.Store(min(unknownMaxMessageBytes, l.most))
	l.dlq.Store(min(unknownMaxMessageBytes, l.most))
	l.watchlist.Store(min(unknownMaxMessageBytes, l.most))
	return l
}

// batchMax is the ProducerBatchMaxBytesFn: franz-go asks it when it first
// produces to a partition, which is after read.
func (l *outputLimits) batchMax(topic string) int32 {
	switch topic {
	case l.alertsTopic:
		return int32(l.alerts.Load())
	case l.dlqTopic:
		return int32(l.dlq.Load())
	case l.watchlistTopic:
		return int32(l.watchlist.Load())
	}
	return unknownMaxMessageBytes
}

// read reads the output topics' max.message.bytes (the broker's value when
// the topic does not set it: DescribeConfigs answers with the value in
// force). A topic whose configuration cannot be read keeps
// unknownMaxMessageBytes, with a warning; a topic whose limit is below
// producer.MinMessageBytes is refused.
func (l *outputLimits) read(ctx context.Context, adm *kadm.Client, cfg *Config) error {
	type limit struct {
		topic string
		limit *atomic.Int64
	}
	topics := []limit{{l.alertsTopic, &l.alerts}, {l.dlqTopic, &l.dlq}}
	if l.watchlistTopic != "" {
		topics = append(topics, limit{l.watchlistTopic, &l.watchlist})
	}
	names := make([]string, len(topics))
	for i, t := range topics {
		names[i] = t.topic
	}
	configs, err := adm.DescribeTopicConfigs(ctx, names...)
	for _, t := range topics {
		v, vErr := maxMessageBytes(configs, err, t.topic)
		if vErr != nil {
			cfg.Logger.Warn("cannot read the output topic's max.message.bytes; records are cut to fit the default instead (allow DescribeConfigs on the topic)",
				"topic", t.topic, "assumed", unknownMaxMessageBytes, "err", vErr)
			continue
		}
		if v < producer.MinMessageBytes {
			return fmt.Errorf("consumer: topic %q has max.message.bytes=%d: a dead letter needs at least %d bytes", t.topic, v, producer.MinMessageBytes)
		}
		t.limit.Store(min(v, l.most))
	}
	cfg.Logger.Info("output limits", "alerts_max_message_bytes", l.alerts.Load(), "dlq_max_message_bytes", l.dlq.Load(),
		"watchlist_max_message_bytes", l.watchlist.Load())
	return nil
}

func maxMessageBytes(configs kadm.ResourceConfigs, err error, topic string) (int64, error) {
	if err != nil {
		return 0, err
	}
	rc, err := configs.On(topic, nil)
	if err == nil {
		err = rc.Err
	}
	if err != nil {
		return 0, err
	}
	for _, c := range rc.Configs {
		if c.Key == "max.message.bytes" && c.Value != nil {
			v, err := strconv.ParseInt(*c.Value, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("max.message.bytes %q: %w", *c.Value, err)
			}
			return v, nil
		}
	}
	return 0, errors.New("max.message.bytes not in the topic's configuration")
}

// output is a record the open transaction produces and what it stands for.
type output struct {
	rec    *kgo.Record
	source *kgo.Record // the input record it was made from
	// finding is the index in pendingFindings of the finding an alert
	// reports, -1 for a dead letter or a watch entry.
	finding int
	// watch is the index in pendingWatches of a watch entry, -1 for
	// anything else.
	watch int
	// stripped: a dead letter already cut to its headers; if it is refused
	// too, nothing smaller can stand for the record.
	stripped bool
}

// rejection is an output's produce error.
type rejection struct {
	out output
	err error
	// alone: the only record its flush had refused, so the refusal is
	// about this record (franz-go fails every record buffered for a
	// partition with the batch that the broker refused).
	alone bool
}

// maxSettleRounds bounds the produce-and-flush rounds that settle spends on
// one transaction's refused records: a round isolates or replaces them,
// halving each group of records refused together.
const maxSettleRounds = 64

// recordError reports whether a produce error is about the record (or the
// batch it was in) alone, so that the transaction can commit once the
// record is replaced: a record too large for the topic, or one the broker's
// validation refused. Every other produce error is the transaction's: it
// aborts, and the batch is read again.
func recordError(err error) bool {
	return errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.InvalidRecord) ||
		errors.Is(err, kerr.CorruptMessage) || errors.Is(err, kerr.InvalidTimestamp)
}

// produce produces o in the open transaction; a failure is kept for settle.
func (l *loop) produce(ctx context.Context, o output) {
	l.produced++
	l.sess.Produce(ctx, o.rec, func(_ *kgo.Record, err error) {
		if err != nil {
			l.produceMu.Lock()
			l.rejected = append(l.rejected, rejection{out: o, err: err})
			l.produceMu.Unlock()
		}
	})
}

func (l *loop) takeRejected() []rejection {
	l.produceMu.Lock()
	defer l.produceMu.Unlock()
	r := l.rejected
	l.rejected = nil
	return r
}

// settle deals with the outputs refused by the flush that has just ended,
// so that the transaction can commit: a record refused on its own is
// replaced by a dead letter that says why (an alert by its source record,
// class output_rejected; a dead letter by itself without key and value),
// and records refused together (franz-go fails every record buffered for a
// partition with the batch that the broker refused) are produced again in
// halves, each half flushed on its own, until each refusal is down to its
// record. It returns an error,
// and the transaction must abort, when a refusal is not about a record, or
// when a record stays refused even stripped.
func (l *loop) settle(ctx context.Context, refused []rejection) error {
	var groups [][]rejection
	push := func(rs []rejection) {
		switch {
		case len(rs) == 1:
			rs[0].alone = true
			groups = append(groups, rs)
		case len(rs) > 1:
			groups = append(groups, rs[:len(rs)/2], rs[len(rs)/2:])
		}
	}
	push(refused)
	for round := 0; len(groups) > 0; round++ {
		if round == maxSettleRounds {
			return fmt.Errorf("consumer: %d rounds of producing refused records again, and some are still refused", round)
		}
		g := groups[len(groups)-1]
		groups = groups[:len(groups)-1]
		for _, r := range g {
			if !recordError(r.err) {
				return r.err
			}
			o := r.out
			if r.alone {
				var err error
				if o, err = l.replace(r); err != nil {
					return err
				}
			}
			l.produce(ctx, o)
		}
		if err := l.sess.Client().Flush(ctx); err != nil {
			return fmt.Errorf("flushing: %w", err)
		}
		push(l.takeRejected())
	}
	return nil
}

// replace returns the output that stands for r's record in the topic once
// the broker has refused it.
func (l *loop) replace(r rejection) (output, error) {
	o := r.out
	src := o.source
	if src == nil {
		// A marker: nothing can stand for it, and it is small.
		return o, fmt.Errorf("consumer: %s refused the marker %s: %w", o.rec.Topic, o.rec.Key, r.err)
	}
	log := l.cfg.Logger.With("topic", src.Topic, "partition", src.Partition, "offset", src.Offset, "output_topic", o.rec.Topic, "err", r.err)
	if errors.Is(r.err, kerr.MessageTooLarge) {
		log.Warn("a record cut to the topic's max.message.bytes read at start-up was refused as too large: if the topic's limit was lowered since, restart the instance to read it again",
			"record_bytes", producer.RecordBytes(o.rec))
	}
	if o.watch >= 0 {
		// The alert has gone out; the watch it opens has not. The source
		// record goes where a person finds it, with the reason.
		log.Warn("watch entry refused; its source record goes to the dead-letter topic", "watch_key", string(o.rec.Key))
		l.pendingWatches[o.watch].dropped = true
		l.pendingClasses = append(l.pendingClasses, producer.ClassOutputRejected)
		cause := &rejectedError{what: "watch entry", alertID: string(o.rec.Key), topic: o.rec.Topic, err: r.err}
		dead := producer.DeadLetter(src.Value, src.Key, sourceOf(src), cause, l.cfg.DLQTopic, int(l.limits.dlq.Load()))
		return output{rec: dead, source: src, finding: -1, watch: -1}, nil
	}
	if o.finding >= 0 {
		log.Warn("alert refused; its source record goes to the dead-letter topic", "alert_id", string(o.rec.Key))
		l.pendingFindings[o.finding].dropped = true
		l.pendingClasses = append(l.pendingClasses, producer.ClassOutputRejected)
		cause := &rejectedError{what: "alert", alertID: string(o.rec.Key), topic: o.rec.Topic, err: r.err}
		dead := producer.DeadLetter(src.Value, src.Key, sourceOf(src), cause, l.cfg.DLQTopic, int(l.limits.dlq.Load()))
		return output{rec: dead, source: src, finding: -1, watch: -1}, nil
	}
	if o.stripped {
		return o, fmt.Errorf("consumer: the dead letter of %s/%d@%d is refused even without key and value: %w", src.Topic, src.Partition, src.Offset, r.err)
	}
	log.Warn("dead letter refused; producing it again without key and value")
	return output{rec: producer.StripDeadLetter(o.rec), source: src, finding: -1, watch: -1, stripped: true}, nil
}

// rejectedError is the cause in the dead letter of a record whose alert (or
// watch entry) the broker refused.
type rejectedError struct {
	// what is "alert" or "watch entry"; alertID is the record's key.
	what, alertID, topic string
	err                  error
}

func (e *rejectedError) Error() string {
	return fmt.Sprintf("consumer: topic %s refused %s %s: %v", e.topic, e.what, e.alertID, e.err)
}

func (e *rejectedError) Unwrap() error { return e.err }

// Class returns producer.ClassOutputRejected.
func (e *rejectedError) Class() string { return producer.ClassOutputRejected }

func sourceOf(r *kgo.Record) producer.Source {
	return producer.Source{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset}
}
