package cloudtrailgen

import (
	"encoding/base64"
)

// Whitespace of a JSON document: CloudTrail and most shippers write compact
// JSON; tools and test fixtures (samples 02, 04, 08) do not.
const (
	formatCompact = iota
	formatSpaced  // ", " and ": " as Python's json.dumps
	formatIndented
)

func (g *Generator) drawFormat() int {
	switch v := g.rng.IntN(100); {
	case v < 5:
		return formatSpaced
	case v < 10:
		return formatIndented
	}
	return formatCompact
}

// capFor lowers a size cap so that the document still fits once reformatted.
func capFor(format, max int) int {
	switch format {
	case formatSpaced:
		return max * 88 / 100
	case formatIndented:
		return max * 60 / 100
	}
	return max
}

// appendFormatted appends the compact JSON src to dst, reformatted as drawn.
func (g *Generator) appendFormatted(dst, src []byte) []byte {
	return g.appendAs(dst, src, g.drawFormat())
}

func (g *Generator) appendAs(dst, src []byte, format int) []byte {
	switch format {
	case formatSpaced:
		return appendSpaced(dst, src)
	case formatIndented:
		indent := "  "
		switch g.rng.IntN(3) {
		case 0:
			indent = "    "
		case 1:
			indent = "\t"
		}
		return appendIndented(dst, src, indent)
	}
	return append(dst, src...)
}

func (g *Generator) addEvent(st *eventState) {
	e := Event{EventID: st.id, Kind: st.kind, EventName: st.op.name, AccountID: st.account, PolicyARN: st.policyArn}
	if st.targetKey == "userName" {
		e.UserName = st.target
	}
	g.events = append(g.events, e)
}

// record plans the next event, notes it in the record's events, and
// appends its JSON to b.
func (g *Generator) record(b []byte, max int) ([]byte, *eventState) {
	st := g.plan(g.drawKind(), max)
	g.addEvent(st)
	return g.appendCloudTrail(b, st), st
}

func (g *Generator) appendSingle(dst []byte) []byte {
	format := g.drawFormat()
	if format == formatCompact {
		dst, _ = g.record(dst, maxSingle)
		return dst
	}
	g.raw, _ = g.record(g.raw[:0], capFor(format, maxSingle))
	n := len(dst)
	if dst = g.appendAs(dst, g.raw, format); len(dst)-n > maxSingle {
		// Deeply nested items indent badly; keep the record under the cap.
		dst = append(dst[:n], g.raw...)
	}
	return dst
}

// appendS3Object appends a CloudTrail log file as S3 holds it (samples 05, 06).
func (g *Generator) appendS3Object(dst []byte) []byte {
	format := g.drawFormat()
	b := dst
	if format != formatCompact {
		b = g.aux[:0]
	}
	b = append(b, `{"Records":[`...)
	for i, n := 0, 1+g.rng.IntN(3); i < n; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b, _ = g.record(b, capFor(format, 1800))
	}
	b = append(b, "]}"...)
	if format == formatCompact {
		return b
	}
	g.aux = b
	return g.appendAs(dst, b, format)
}

// service is the service name of an eventSource: "iam" for iam.amazonaws.com.
func service(op *operation) string { return op.source[:len(op.source)-len(".amazonaws.com")] }

// appendEventBridge appends an EventBridge event (sample 07).
func (g *Generator) appendEventBridge(dst []byte) []byte {
	format := g.drawFormat()
	b := dst
	if format != formatCompact {
		b = g.aux[:0]
	}
	st := g.plan(g.drawKind(), capFor(format, 4500))
	g.addEvent(st)
	b = append(b, `{"version":"0","id":"`...)
	b = g.uuid(b)
	b = append(b, `","detail-type":"`...)
	switch {
	case st.op.console:
		b = append(b, "AWS Console Sign In via CloudTrail"...)
	case st.op.serviceEvent:
		b = append(b, "AWS Service Event via CloudTrail"...)
	default:
		b = append(b, "AWS API Call via CloudTrail"...)
	}
	b = append(b, `","source":"aws.`...)
	b = append(b, service(st.op)...)
	b = append(b, `","account":"`...)
	b = append(b, st.account...)
	b = append(b, `","time":"`...)
	b = g.eventTime(b, st.sec)
	b = append(b, `","region":"`...)
	b = append(b, st.region...)
	b = append(b, `","resources":[],"detail":`...)
	b = g.appendCloudTrail(b, st)
	b = append(b, '}')
	if format == formatCompact {
		return b
	}
	g.aux = b
	return g.appendAs(dst, b, format)
}

// appendCloudWatch appends a decoded CloudWatch Logs subscription payload
// (sample 09) of a CloudTrail log group; one in a hundred is the
// CONTROL_MESSAGE CloudWatch sends to check a new destination, which holds
// no event and so has no place in a dense stream.
func (g *Generator) appendCloudWatch(b []byte) []byte {
	acct, region := pick(g, accounts), pick(g, regions)
	if !g.cfg.Dense && g.rng.IntN(100) == 0 {
		b = append(b, `{"messageType":"CONTROL_MESSAGE","owner":"CloudwatchLogs","logGroup":"","logStream":"","subscriptionFilters":[],"logEvents":[{"id":"","timestamp":`...)
		b = appendInt(b, g.ms)
		return append(b, `,"message":"CWL CONTROL MESSAGE: Checking health of destination Firehose."}]}`...)
	}
	b = append(b, `{"messageType":"DATA_MESSAGE","owner":"`...)
	b = append(b, acct...)
	b = append(b, `","logGroup":"aws-cloudtrail-logs-`...)
	b = append(b, acct...)
	b = append(b, '-')
	b = g.hex(b, 8)
	b = append(b, `","logStream":"`...)
	b = append(b, acct...)
	b = append(b, "_CloudTrail_"...)
	b = append(b, region...)
	b = append(b, `","subscriptionFilters":["cloudtrail-to-kafka"],"logEvents":[`...)
	for i, n := 0, 1+g.rng.IntN(2); i < n; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		var st *eventState
		g.raw, st = g.record(g.raw[:0], 1800)
		b = append(b, `{"id":"`...)
		b = append(b, byte('1'+g.rng.IntN(9)))
		b = g.digits(b, 55)
		b = append(b, `","timestamp":`...)
		b = appendInt(b, st.ms+int64(g.rng.IntN(300000)))
		b = append(b, `,"message":"`...)
		b = appendJSONString(b, g.raw)
		b = append(b, `"}`...)
	}
	return append(b, "]}"...)
}

// appendCloudWatchEncoded appends the payload as it travels: gzip bytes,
// base64 of them, or base64 in the awslogs wrapper Lambda receives.
func (g *Generator) appendCloudWatchEncoded(dst []byte, shape Shape) []byte {
	g.aux = g.appendCloudWatch(g.aux[:0])
	g.gzOut.b = g.gzOut.b[:0]
	g.gz.Reset(&g.gzOut)
	// Writes to an appendWriter cannot fail.
	_, _ = g.gz.Write(g.aux)
	_ = g.gz.Close()
	switch shape {
	case ShapeCloudWatchGzip:
		return append(dst, g.gzOut.b...)
	case ShapeCloudWatchBase64:
		return base64.StdEncoding.AppendEncode(dst, g.gzOut.b)
	}
	dst = append(dst, `{"awslogs":{"data":"`...)
	dst = base64.StdEncoding.AppendEncode(dst, g.gzOut.b)
	return append(dst, `"}}`...)
}

// appendAgentMessage appends the event Elastic Agent or Filebeat ships to
// Kafka: the CloudTrail record as a string in "message", with the input's
// metadata around it.
func (g *Generator) appendAgentMessage(dst []byte) []byte {
	var st *eventState
	g.raw, st = g.record(g.raw[:0], 3900)
	ingest := st.ms + int64(60000+g.rng.IntN(240000))
	msgFirst := g.rng.IntN(2) == 0
	b := append(dst, `{"@timestamp":"`...)
	b = appendTimeMillis(b, ingest)
	b = append(b, `","@metadata":{"beat":"filebeat","type":"_doc","version":"8.15.3"},`...)
	if msgFirst {
		b = append(b, `"message":"`...)
		b = appendJSONString(b, g.raw)
		b = append(b, `",`...)
	}
	b = append(b, `"agent":{"name":"ip-10-0-`...)
	b = appendInt(b, int64(g.rng.IntN(256)))
	b = append(b, `-`...)
	b = appendInt(b, int64(g.rng.IntN(256)))
	b = append(b, `","id":"`...)
	b = g.uuid(b)
	b = append(b, `","ephemeral_id":"`...)
	b = g.uuid(b)
	b = append(b, `","type":"filebeat","version":"8.15.3"},"ecs":{"version":"8.0.0"},`...)
	switch v := g.rng.IntN(10); {
	case v < 6:
		const bucket = "cloudtrail-logs-org-o-abc123"
		b = append(b, `"input":{"type":"aws-s3"},"aws":{"s3":{"bucket":{"name":"`+bucket+`","arn":"arn:aws:s3:::`+bucket+`"},"object":{"key":"`...)
		b = g.logObjectKey(b, st)
		b = append(b, `"}}},"log":{"file":{"path":"https://`+bucket+`.s3.us-east-1.amazonaws.com/`...)
		b = g.logObjectKey(b, st)
		b = append(b, `"},"offset":`...)
		b = appendInt(b, int64(g.rng.IntN(1<<20)))
		b = append(b, `},"cloud":{"provider":"aws","region":"us-east-1"},`...)
	case v < 9:
		b = append(b, `"input":{"type":"aws-cloudwatch"},"awscloudwatch":{"log_group":"aws-cloudtrail-logs-`...)
		b = append(b, st.account...)
		b = append(b, `","log_stream":"`...)
		b = append(b, st.account...)
		b = append(b, "_CloudTrail_"...)
		b = append(b, st.region...)
		b = append(b, `","ingestion_time":"`...)
		b = appendTimeMillis(b, ingest-1000)
		b = append(b, `"},"cloud":{"provider":"aws","region":"`...)
		b = append(b, st.region...)
		b = append(b, `"},`...)
	default:
		b = append(b, `"input":{"type":"kafka"},"kafka":{"topic":"cloudtrail-raw","partition":`...)
		b = appendInt(b, int64(g.rng.IntN(12)))
		b = append(b, `,"offset":`...)
		b = appendInt(b, int64(g.rng.IntN(1<<30)))
		b = append(b, `,"key":"","headers":[]},`...)
	}
	if g.rng.IntN(2) == 0 {
		b = append(b, `"data_stream":{"namespace":"default","type":"logs","dataset":"aws.cloudtrail"},"event":{"dataset":"aws.cloudtrail"},`...)
	}
	b = append(b, `"host":{"name":"filebeat-7d9f"},"tags":["forwarded","aws-cloudtrail"]`...)
	if !msgFirst {
		b = append(b, `,"message":"`...)
		b = appendJSONString(b, g.raw)
		b = append(b, '"')
	}
	return append(b, '}')
}

// logObjectKey appends the S3 key of the CloudTrail log file holding st.
func (g *Generator) logObjectKey(b []byte, st *eventState) []byte {
	b = append(b, "AWSLogs/"...)
	b = append(b, st.account...)
	b = append(b, "/CloudTrail/"...)
	b = append(b, st.region...)
	b = append(b, '/')
	var day [20]byte
	d := appendTime(day[:0], st.sec)
	b = append(b, d[0:4]...)
	b = append(b, '/')
	b = append(b, d[5:7]...)
	b = append(b, '/')
	b = append(b, d[8:10]...)
	b = append(b, '/')
	b = append(b, st.account...)
	b = append(b, "_CloudTrail_"...)
	b = append(b, st.region...)
	b = append(b, '_')
	b = append(b, d[0:4]...)
	b = append(b, d[5:7]...)
	b = append(b, d[8:10]...)
	b = append(b, 'T')
	b = append(b, d[11:13]...)
	b = append(b, d[14:16]...)
	b = append(b, "Z_"...)
	b = append(b, st.id[:8]...)
	b = append(b, st.id[9:13]...)
	b = append(b, st.id[14:18]...)
	return append(b, ".json.gz"...)
}
