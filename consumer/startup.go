package consumer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// What Run checks and prepares before the first poll. Each check fails
// with the name of the resource and, for a missing right, the ACL to
// grant: a session started without a right it needs does not fail, it
// stalls (its fetches, offset fetches or commits are refused and retried),
// which is the worst way to find out.

// isAuthError reports errors that waiting will not cure.
func isAuthError(err error) bool {
	var certErr *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	return errors.As(err, &certErr) || errors.As(err, &unknownCA) || errors.As(err, &hostErr) ||
		errors.Is(err, kerr.SaslAuthenticationFailed) || errors.Is(err, kerr.TopicAuthorizationFailed) ||
		errors.Is(err, kerr.ClusterAuthorizationFailed) || errors.Is(err, kerr.IllegalSaslState) ||
		errors.Is(err, kerr.UnsupportedSaslMechanism) || errors.Is(err, kerr.GroupAuthorizationFailed) ||
		errors.Is(err, kerr.TransactionalIDAuthorizationFailed)
}

// startup checks the topics (creating the outputs when asked to), the
// group and the transactional id, and initialises the producer id.
func startup(ctx context.Context, cl *kgo.Client, cfg *Config) error {
	if err := checkTopics(ctx, cl, cfg); err != nil {
		return err
	}
	if err := checkGroup(ctx, cl, cfg); err != nil {
		return err
	}
	return initProducerID(ctx, cl, cfg)
}

// describeTopics asks for the topics' metadata with the operations the
// user may perform on each. kadm's ListTopics fails as a whole on the
// first topic the user may not describe, without naming it.
func describeTopics(ctx context.Context, cl *kgo.Client, topics []string) (*kmsg.MetadataResponse, error) {
	req := kmsg.NewPtrMetadataRequest()
	req.IncludeTopicAuthorizedOperations = true
	req.AllowAutoTopicCreation = false // a misspelt source must not be created
	for _, t := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	return req.RequestWith(ctx, cl)
}

// checkTopics fails naming each topic that is missing or that the user
// may not use as it must (Read on a source, Write on an output, Read and
// Write on the watchlist, which every instance also loads), refuses a
// compacted source unless allowed and a watchlist that is not compacted,
// and creates missing outputs when asked to.
func checkTopics(ctx context.Context, cl *kgo.Client, cfg *Config) error {
	outputs := cfg.outputTopics()
	all := append(append([]string(nil), cfg.SourceTopics...), outputs...)
	// Brokers that are restarting refuse connections for a while: retry
	// until the start-up timeout, so that an instance restarted alongside
	// its cluster waits for it rather than crash-looping.
	var resp *kmsg.MetadataResponse
	var err error
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 2*time.Second) {
		resp, err = describeTopics(ctx, cl, all)
		if err == nil || isAuthError(err) {
			break
		}
		cfg.Logger.Warn("brokers not reachable yet", "brokers", cfg.Brokers, "err", err)
		select {
		case <-time.After(backoff):
			continue
		case <-ctx.Done():
		}
		break
	}
	if err != nil {
		return fmt.Errorf("consumer: listing topics on %s (check the brokers and the TLS and SASL settings): %w", strings.Join(cfg.Brokers, ","), err)
	}
	found := map[string]kmsg.MetadataResponseTopic{}
	for _, t := range resp.Topics {
		if t.Topic != nil {
			found[*t.Topic] = t
		}
	}
	var problems, create []string
	for _, name := range all {
		output := slices.Contains(outputs, name)
		kind, rights := "source", []kmsg.ACLOperation{kmsg.ACLOperationRead}
		switch {
		case cfg.watching() && name == cfg.watchlistTopic():
			kind, rights = "watchlist", []kmsg.ACLOperation{kmsg.ACLOperationRead, kmsg.ACLOperationWrite}
		case output:
			kind, rights = "output", []kmsg.ACLOperation{kmsg.ACLOperationWrite}
		}
		t, ok := found[name]
		err := kerr.ErrorForCode(t.ErrorCode)
		switch {
		case !ok || errors.Is(err, kerr.UnknownTopicOrPartition):
			switch {
			case !output:
				problems = append(problems, fmt.Sprintf("source topic %q does not exist", name))
			case cfg.CreateTopics:
				create = append(create, name)
			default:
				problems = append(problems, fmt.Sprintf("%s topic %q does not exist (create it, or pass --create-topics)", kind, name))
			}
		case errors.Is(err, kerr.TopicAuthorizationFailed):
			var names []string
			for _, op := range rights {
				names = append(names, rightNames[op])
			}
			problems = append(problems, fmt.Sprintf("%s topic %q: not authorized to describe it (TOPIC_AUTHORIZATION_FAILED): grant the user %s on it",
				kind, name, strings.Join(names, " and ")))
		case err != nil:
			problems = append(problems, fmt.Sprintf("%s topic %q: %v", kind, name, err))
		default:
			ops := kadm.DecodeACLOperations(t.AuthorizedOperations)
			if len(ops) == 0 || slices.Contains(ops, kmsg.ACLOperationAll) {
				break
			}
			for _, op := range rights {
				if !slices.Contains(ops, op) {
					right := rightNames[op]
					problems = append(problems, fmt.Sprintf("%s topic %q: not authorized to %s it (the user may only %s): grant the user %s on it",
						kind, name, strings.ToLower(right), opNames(ops), right))
				}
			}
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("consumer: %s", strings.Join(problems, "; "))
	}
	if err := checkCompaction(ctx, cl, cfg, !slices.Contains(create, cfg.watchlistTopic())); err != nil {
		return err
	}
	if len(create) > 0 {
		return createTopics(ctx, cl, cfg, create, len(resp.Brokers))
	}
	return nil
}

// rightNames are the ACL operations as the README's ACL list names them.
var rightNames = map[kmsg.ACLOperation]string{kmsg.ACLOperationRead: "Read", kmsg.ACLOperationWrite: "Write"}

func opNames(ops []kmsg.ACLOperation) string {
	names := make([]string, len(ops))
	for i, op := range ops {
		names[i] = op.String()
	}
	return strings.Join(names, ", ")
}

// checkCompaction refuses a source topic with cleanup.policy compact,
// unless AllowCompactedSource: the broker deletes a compacted topic's
// records that have a newer record with the same key, whether or not they
// were read, and CloudTrail records are events, not updates of a key.
// With watchlist set (the watch is on and its topic exists), it also
// refuses a watchlist topic that is not compacted: under the delete
// policy the broker deletes entries by age, and a watch longer than the
// topic's retention would end early and unseen, at the next restart.
// Reading a topic's configuration takes DescribeConfigs on it, which the
// service does not otherwise need: without it, the check is skipped with a
// warning.
func checkCompaction(ctx context.Context, cl *kgo.Client, cfg *Config, watchlist bool) error {
	var topics []string
	if !cfg.AllowCompactedSource {
		topics = append(topics, cfg.SourceTopics...)
	}
	watchlist = watchlist && cfg.watching()
	if watchlist {
		topics = append(topics, cfg.watchlistTopic())
	}
	if len(topics) == 0 {
		return nil
	}
	rcs, err := kadm.NewClient(cl).DescribeTopicConfigs(ctx, topics...)
	if err != nil && !errors.Is(err, kerr.TopicAuthorizationFailed) {
		return fmt.Errorf("consumer: reading the configuration of topics %s: %w", strings.Join(topics, ", "), err)
	}
	var problems []string
	for _, rc := range rcs {
		isWatchlist := watchlist && rc.Name == cfg.watchlistTopic()
		if rc.Err != nil || err != nil {
			what := "the source topic's cleanup.policy to check that it is not compacted"
			if isWatchlist {
				what = "the watchlist topic's cleanup.policy to check that it is compacted"
			}
			cfg.Logger.Warn("cannot read "+what+"; grant the user DescribeConfigs on it to have it checked",
				"topic", rc.Name, "err", errors.Join(rc.Err, err))
			continue
		}
		policy := "delete" // Kafka's default, when the answer lacks it
		for _, c := range rc.Configs {
			if c.Key == "cleanup.policy" && c.Value != nil {
				policy = *c.Value
			}
		}
		compacted := strings.Contains(policy, "compact")
		switch {
		case isWatchlist && !compacted:
			problems = append(problems, fmt.Sprintf("watchlist topic %q has cleanup.policy=%s: it must be compact, or the broker deletes watch entries by age "+
				"(set cleanup.policy=compact on it, or let --create-topics create it)", rc.Name, policy))
		case isWatchlist && strings.Contains(policy, "delete"):
			cfg.Logger.Warn("the watchlist topic is compacted and also deletes by age: an entry older than its retention.ms is deleted before the watch ends",
				"topic", rc.Name, "cleanup_policy", policy, "watch_for", cfg.WatchFor)
		case !isWatchlist && compacted:
			problems = append(problems, fmt.Sprintf("source topic %q has cleanup.policy=%s: the broker deletes records of a compacted topic "+
				"that have a newer record with the same key, read or not (pass --allow-compacted-source to consume it anyway)", rc.Name, policy))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("consumer: %s", strings.Join(problems, "; "))
	}
	return nil
}

// createTopics creates the missing outputs with DefaultTopicPartitions
// partitions and, unless configured, min(3, brokers) replicas and
// min.insync.replicas 2 when there are 3 replicas or more: the alerts are
// written with acks=all, and a topic with one replica, the broker default,
// loses them with one disk. The watchlist topic is created compacted:
// an entry lives until a newer one or a tombstone replaces it.
func createTopics(ctx context.Context, cl *kgo.Client, cfg *Config, topics []string, brokers int) error {
	rf := cfg.CreateTopicsReplication
	if rf <= 0 {
		rf = int16(min(3, max(brokers, 1)))
	}
	minISR := cfg.CreateTopicsMinInsyncReplicas
	if minISR == "" && rf >= 3 {
		minISR = "2"
	}
	adm := kadm.NewClient(cl)
	for _, t := range topics {
		configs := map[string]*string{}
		if minISR != "" {
			configs["min.insync.replicas"] = &minISR
		}
		policy := "the broker's"
		if cfg.watching() && t == cfg.watchlistTopic() {
			policy = "compact"
			configs["cleanup.policy"] = &policy
		}
		resp, err := adm.CreateTopic(ctx, DefaultTopicPartitions, rf, configs, t)
		if err == nil {
			err = resp.Err
		}
		switch {
		case errors.Is(err, kerr.TopicAlreadyExists):
			// Another instance created it first.
		case errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.ClusterAuthorizationFailed):
			return fmt.Errorf("consumer: creating topic %q: %w: grant the user Create on it (or on the cluster), or create it yourself", t, err)
		case err != nil:
			return fmt.Errorf("consumer: creating topic %q with %d replicas (--create-topics-replication-factor) and min.insync.replicas %q: %w", t, rf, minISR, err)
		default:
			cfg.Logger.Info("created topic", "topic", t, "partitions", DefaultTopicPartitions, "replication_factor", rf, "min_insync_replicas", minISR,
				"cleanup_policy", policy)
		}
	}
	return awaitTopics(ctx, cl, topics)
}

// awaitTopics waits until the brokers' metadata shows every partition of
// topics with a leader. A topic just created reaches the brokers' metadata
// a moment later; and franz-go answers kadm's requests from the metadata
// the client last fetched (describeTopics', which said the topics did not
// exist) for up to MetadataMinAge: the assignment gate's listing of the
// watchlist would fail on it. A fresh answer replaces the client's.
func awaitTopics(ctx context.Context, cl *kgo.Client, topics []string) error {
	for backoff := 10 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
		resp, err := describeTopics(ctx, cl, topics)
		if err == nil {
			err = topicsLed(resp, topics)
		}
		if err == nil {
			return nil
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return fmt.Errorf("consumer: waiting for the topics it created to have leaders: %w", err)
		}
	}
}

// topicsLed returns an error naming the first of topics that resp does not
// show with partitions that all have a leader.
func topicsLed(resp *kmsg.MetadataResponse, topics []string) error {
	for _, name := range topics {
		i := slices.IndexFunc(resp.Topics, func(t kmsg.MetadataResponseTopic) bool { return t.Topic != nil && *t.Topic == name })
		if i < 0 {
			return fmt.Errorf("topic %q not in the metadata", name)
		}
		t := resp.Topics[i]
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
			return fmt.Errorf("topic %q: %w", name, err)
		}
		if len(t.Partitions) == 0 {
			return fmt.Errorf("topic %q has no partitions yet", name)
		}
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil || p.Leader < 0 {
				return fmt.Errorf("topic %q partition %d has no leader yet (%v)", name, p.Partition, err)
			}
		}
	}
	return nil
}

// checkGroup fails when the user may not use the group. Other errors are
// left to the session, which retries them.
func checkGroup(ctx context.Context, cl *kgo.Client, cfg *Config) error {
	groups, err := kadm.NewClient(cl).DescribeGroups(ctx, cfg.Group)
	if err == nil {
		err = groups[cfg.Group].Err
	}
	if errors.Is(err, kerr.GroupAuthorizationFailed) {
		return fmt.Errorf("consumer: group %q: not authorized (GROUP_AUTHORIZATION_FAILED): grant the user Read on it", cfg.Group)
	}
	if err != nil && !errors.Is(err, kerr.GroupIDNotFound) { // a new group does not exist until joined
		cfg.Logger.Warn("cannot describe the group at start-up; the session will retry", "group", cfg.Group, "err", err)
	}
	return nil
}

// initProducerID initialises the producer id now rather than at the first
// transaction, which comes only after a poll returns records. Initialising
// it bumps the epoch of the transactional id, and the broker aborts the
// transaction a predecessor with the same id left open: until then the
// offsets that transaction committed are unstable, the group's offset
// fetch for its partitions waits on UNSTABLE_OFFSET_COMMIT, and a lazy
// instance would never poll, and never fence, until the predecessor's
// transaction timed out.
func initProducerID(ctx context.Context, cl *kgo.Client, cfg *Config) error {
	began := time.Now()
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 2*time.Second) {
		id, epoch, err := cl.ProducerID(ctx)
		switch {
		case err == nil:
			cfg.Logger.Info("producer id initialised: any transaction a predecessor with this transactional id left open is aborted",
				"transactional_id", cfg.TransactionalID, "producer_id", id, "epoch", epoch, "took", time.Since(began).Round(time.Millisecond))
			return nil
		case errors.Is(err, kerr.TransactionalIDAuthorizationFailed):
			return fmt.Errorf("consumer: transactional id %q: not authorized (TRANSACTIONAL_ID_AUTHORIZATION_FAILED): grant the user Write on it "+
				"(a prefixed ACL covers every instance)", cfg.TransactionalID)
		case errors.Is(err, kerr.ClusterAuthorizationFailed):
			return fmt.Errorf("consumer: initialising the producer id of transactional id %q: %w: grant the user IdempotentWrite on the cluster", cfg.TransactionalID, err)
		case ctx.Err() != nil:
			return fmt.Errorf("consumer: initialising the producer id of transactional id %q within the start-up timeout: %w", cfg.TransactionalID, err)
		case isAuthError(err):
			return fmt.Errorf("consumer: initialising the producer id of transactional id %q: %w", cfg.TransactionalID, err)
		}
		cfg.Logger.Warn("initialising the producer id; retrying", "transactional_id", cfg.TransactionalID, "err", err, "backoff", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
	}
}
