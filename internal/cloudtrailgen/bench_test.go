package cloudtrailgen

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
)

// benchmarkAppendNext reports bytes per record (so MB/s) and records/s.
func benchmarkAppendNext(b *testing.B, cfg Config) {
	g := New(cfg)
	buf := make([]byte, 0, 64<<10)
	for range 1000 { // warm up the generator's buffers
		buf = g.AppendNext(buf[:0]).Value
	}
	total := 0
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		r := g.AppendNext(buf[:0])
		buf = r.Value
		total += len(buf)
	}
	b.SetBytes(int64(total / b.N))
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkAppendNext measures the zero-garbage path, for the default mix
// (what a matcher benchmark or the end-to-end benchmark uses), with the
// rule's events and malformed values mixed in, and for each shape alone.
func BenchmarkAppendNext(b *testing.B) {
	b.Run("default", func(b *testing.B) { benchmarkAppendNext(b, Config{Seed: 1}) })
	b.Run("default+positives+malformed", func(b *testing.B) {
		benchmarkAppendNext(b, Config{Seed: 1, QuarantineRate: 1e-4, NearMissRate: 1e-3, MalformedRate: 1e-3})
	})
	for s := ShapeRecord; s < numShapes; s++ {
		b.Run(s.String(), func(b *testing.B) {
			benchmarkAppendNext(b, Config{Seed: 1, Shapes: map[Shape]float64{s: 1}})
		})
	}
}

// BenchmarkNext is the convenient path, which copies each record.
func BenchmarkNext(b *testing.B) {
	g := New(Config{Seed: 1})
	total := 0
	b.ReportAllocs()
	for b.Loop() {
		total += len(g.Next().Value)
	}
	b.SetBytes(int64(total / b.N))
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkBaselineMarshal is the naive way to make a record: fill a map
// and json.Marshal it. It is what AppendNext's hand-written JSON is for.
func BenchmarkBaselineMarshal(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	total := 0
	b.ReportAllocs()
	for b.Loop() {
		id := fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x", r.Uint32(), r.Uint32()&0xffff, r.Uint32()&0xfff, r.Uint32()&0x3fff|0x8000, r.Uint64()&0xffffffffffff)
		rec := map[string]any{
			"eventVersion": "1.09",
			"userIdentity": map[string]any{
				"type": "AssumedRole", "principalId": "AROAEXAMPLEEXAMPLE01:session", "arn": "arn:aws:sts::123456789012:assumed-role/ec2-instance-role/i-0123456789abcdef0",
				"accountId": "123456789012", "accessKeyId": "ASIAEXAMPLEEXAMPLE01",
				"sessionContext": map[string]any{
					"sessionIssuer":       map[string]any{"type": "Role", "principalId": "AROAEXAMPLEEXAMPLE01", "arn": "arn:aws:iam::123456789012:role/ec2-instance-role", "accountId": "123456789012", "userName": "ec2-instance-role"},
					"webIdFederationData": map[string]any{},
					"attributes":          map[string]any{"creationDate": "2024-10-31T23:57:31Z", "mfaAuthenticated": "false"},
				},
			},
			"eventTime": "2024-11-01T00:00:00Z", "eventSource": "kms.amazonaws.com", "eventName": "Decrypt", "awsRegion": "us-east-1",
			"sourceIPAddress": "192.0.2.10", "userAgent": userAgents[r.IntN(len(userAgents))],
			"requestParameters": map[string]any{"encryptionContext": map[string]any{"aws:lambda:FunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:orders-api"}, "encryptionAlgorithm": "SYMMETRIC_DEFAULT"},
			"responseElements":  nil, "requestID": id, "eventID": id, "readOnly": true,
			"resources": []any{map[string]any{"accountId": "123456789012", "type": "AWS::KMS::Key", "ARN": "arn:aws:kms:us-east-1:123456789012:key/" + id}},
			"eventType": "AwsApiCall", "managementEvent": true, "recipientAccountId": "123456789012", "eventCategory": "Management",
			"tlsDetails": map[string]any{"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256", "clientProvidedHostHeader": "kms.us-east-1.amazonaws.com"},
		}
		v, err := json.Marshal(rec)
		if err != nil {
			b.Fatal(err)
		}
		total += len(v)
	}
	b.SetBytes(int64(total / b.N))
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkBaselineCopy is the physical bound: copying a finished record.
func BenchmarkBaselineCopy(b *testing.B) {
	v := New(Config{Seed: 1, Shapes: map[Shape]float64{ShapeRecord: 1}}).Next().Value
	buf := make([]byte, 0, 64<<10)
	b.SetBytes(int64(len(v)))
	for b.Loop() {
		buf = append(buf[:0], v...)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}
