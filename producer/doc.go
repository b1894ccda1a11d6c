// Package producer turns matcher findings into Kafka records: the alert
// document a SIEM indexes (ECS by default), its deterministic alert id, and
// the dead-letter record for input that could not be decoded.
//
// It builds records; it does not send them. The consumer owns the client,
// the transaction and the decision of when a record is written, so this
// package holds no kgo.Client, no goroutine and no state, and every
// function is safe for concurrent use. It does not decide what is a finding
// (that is the matcher's job) and it never reads the clock: the detection
// time is passed in, so documents are reproducible byte for byte in tests.
//
// The ECS document's shape is pinned by the JSON Schema embedded from
// schema/ecs-alert.schema.json (see ECSSchema); changing a field name or
// type is a schema change and bumps SchemaVersion. OCSF (an OCSF 1.3
// Detection Finding, schema/ocsf-detection-finding.schema.json) is the
// second format; both are Encoders passed to EncodeRecord, and Record uses
// ECS.
package producer
