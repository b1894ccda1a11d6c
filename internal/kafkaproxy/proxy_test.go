package kafkaproxy

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// fakeBroker answers every request in order with the response kmsg makes
// for its key, an EndTxn with endTxnErr. It reads the header by hand, not
// with the proxy's parser, and records what reached it.
type fakeBroker struct {
	t         *testing.T
	ln        net.Listener
	endTxnErr int16
	// corrOffset is added to every response's correlation id: a broker
	// that answers out of order.
	corrOffset int32

	mu      sync.Mutex
	got     []received
	conns   int
	closed  int // connections the proxy closed
	arrived chan received
}

type received struct {
	conn     int
	key      int16
	corr     int32
	at       time.Time
	producer int64
	commit   bool
}

func startFakeBroker(t *testing.T) *fakeBroker {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeBroker{t: t, ln: ln, arrived: make(chan received, 100)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.conns++
			id := f.conns
			f.mu.Unlock()
			go f.serve(id, c)
		}
	}()
	return f
}

func (f *fakeBroker) serve(id int, c net.Conn) {
	defer c.Close()
	for {
		var size [4]byte
		if _, err := io.ReadFull(c, size[:]); err != nil {
			f.mu.Lock()
			f.closed++
			f.mu.Unlock()
			return
		}
		body := make([]byte, binary.BigEndian.Uint32(size[:]))
		if _, err := io.ReadFull(c, body); err != nil {
			return
		}
		key := int16(binary.BigEndian.Uint16(body))
		version := int16(binary.BigEndian.Uint16(body[2:]))
		corr := int32(binary.BigEndian.Uint32(body[4:]))
		r := received{conn: id, key: key, corr: corr, at: time.Now(), producer: -1}
		req := kmsg.RequestForKey(key)
		req.SetVersion(version)
		// Client id (int16 length), then a tag count of zero, which
		// kmsg's formatter always writes for flexible versions.
		n := int(int16(binary.BigEndian.Uint16(body[8:])))
		rest := body[10+max(n, 0):]
		if req.IsFlexible() {
			rest = rest[1:]
		}
		if err := req.ReadFrom(rest); err != nil {
			f.t.Errorf("fake broker: decoding %s: %v", kmsg.NameForKey(key), err)
			return
		}
		resp := req.ResponseKind()
		resp.SetVersion(version)
		if e, ok := req.(*kmsg.EndTxnRequest); ok {
			r.producer, r.commit = e.ProducerID, e.Commit
			resp.(*kmsg.EndTxnResponse).ErrorCode = f.endTxnErr
		}
		f.mu.Lock()
		f.got = append(f.got, r)
		f.mu.Unlock()
		f.arrived <- r
		out := binary.BigEndian.AppendUint32(nil, 0)
		out = binary.BigEndian.AppendUint32(out, uint32(corr+f.corrOffset))
		if resp.IsFlexible() {
			out = append(out, 0)
		}
		out = resp.AppendTo(out)
		binary.BigEndian.PutUint32(out, uint32(len(out)-4))
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// wait returns the next request that reaches the broker, failing after d.
func (f *fakeBroker) wait(d time.Duration) (received, bool) {
	select {
	case r := <-f.arrived:
		return r, true
	case <-time.After(d):
		return received{}, false
	}
}

func startProxy(t *testing.T, upstream string) *Proxy {
	p, err := Start("127.0.0.1:0", upstream)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Close()
		for _, err := range p.Errs() {
			t.Errorf("proxy: %v", err)
		}
	})
	return p
}

// rawClient writes requests and reads responses by hand.
type rawClient struct {
	t *testing.T
	c net.Conn
	f *kmsg.RequestFormatter
}

func dialRaw(t *testing.T, addr string) *rawClient {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, c: c, f: kmsg.NewRequestFormatter(kmsg.FormatterClientID("raw"))}
}

func (r *rawClient) send(req kmsg.Request, corr int32) {
	r.t.Helper()
	req.SetVersion(req.MaxVersion())
	if _, err := r.c.Write(r.f.AppendRequest(nil, req, corr)); err != nil {
		r.t.Fatal(err)
	}
}

// read returns the next response's correlation id, or false if none came
// within d.
func (r *rawClient) read(d time.Duration) (int32, bool) {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(d))
	var size [4]byte
	if _, err := io.ReadFull(r.c, size[:]); err != nil {
		return 0, false
	}
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(r.c, body); err != nil {
		r.t.Fatal(err)
	}
	return int32(binary.BigEndian.Uint32(body)), true
}

func endTxn(pid int64, epoch int16, commit bool) *kmsg.EndTxnRequest {
	r := kmsg.NewPtrEndTxnRequest()
	r.TransactionalID, r.ProducerID, r.ProducerEpoch, r.Commit = "t", pid, epoch, commit
	return r
}

func heartbeat() *kmsg.HeartbeatRequest {
	r := kmsg.NewPtrHeartbeatRequest()
	r.Group, r.MemberID = "g", "m"
	return r
}

// TestHoldDelaysTheRequestAndWhatFollows: a held EndTxn and the heartbeat
// sent after it reach the broker together after the delay, in order, and
// their responses reach the client in order; the heartbeat before it is
// not held.
func TestHoldDelaysTheRequestAndWhatFollows(t *testing.T) {
	f := startFakeBroker(t)
	p := startProxy(t, f.ln.Addr().String())
	const delay = 400 * time.Millisecond
	a := p.Arm(Fault{Key: int16(kmsg.EndTxn), Action: Hold, Delay: delay}, 1)
	c := dialRaw(t, p.Addr())
	began := time.Now()
	c.send(heartbeat(), 1)
	c.send(endTxn(7, 3, true), 2)
	c.send(heartbeat(), 3)
	if corr, ok := c.read(5 * time.Second); !ok || corr != 1 {
		t.Fatalf("first response: correlation %d (%t), want 1 at once", corr, ok)
	}
	for _, want := range []int32{2, 3} {
		corr, ok := c.read(5 * time.Second)
		if !ok || corr != want {
			t.Fatalf("response: correlation %d (%t), want %d", corr, ok, want)
		}
		if el := time.Since(began); el < delay {
			t.Errorf("response %d after %v, before the %v delay", want, el, delay)
		}
	}
	f.mu.Lock()
	got := f.got
	f.mu.Unlock()
	if len(got) != 3 || got[1].key != int16(kmsg.EndTxn) || got[1].at.Sub(got[0].at) < delay*3/4 || got[2].corr != 3 {
		t.Errorf("the broker got %+v, want the heartbeat, then after the delay EndTxn and the second heartbeat", got)
	}
	ev := a.Events()
	if len(ev) != 1 || ev[0].ProducerID != 7 || ev[0].ProducerEpoch != 3 || !ev[0].Commit || ev[0].ClientGone || ev[0].ErrName() != "NONE" {
		t.Errorf("events %v, want one EndTxn commit of producer 7 epoch 3 answered NONE, client still there", ev)
	}
	// Armed for one request: the next EndTxn passes.
	began = time.Now()
	c.send(endTxn(7, 3, true), 4)
	if corr, ok := c.read(5 * time.Second); !ok || corr != 4 || time.Since(began) >= delay {
		t.Errorf("second EndTxn: correlation %d (%t) after %v, want 4 before the delay", corr, ok, time.Since(began))
	}
}

// TestHoldDeliversAfterTheClientLeft: the client gives up on the held
// EndTxn and closes its connection; the proxy still writes it, and what
// followed it, to the broker after the delay, and records the broker's
// answer, which nobody reads.
func TestHoldDeliversAfterTheClientLeft(t *testing.T) {
	f := startFakeBroker(t)
	f.endTxnErr = kerr.InvalidProducerEpoch.Code
	p := startProxy(t, f.ln.Addr().String())
	const delay = 500 * time.Millisecond
	a := p.Arm(Fault{Key: int16(kmsg.EndTxn), Action: Hold, Delay: delay}, 1)
	c := dialRaw(t, p.Addr())
	c.send(endTxn(9, 1, false), 1)
	c.send(heartbeat(), 2)
	if _, ok := c.read(100 * time.Millisecond); ok {
		t.Fatal("a response to a held request")
	}
	c.c.Close()
	closedAt := time.Now()
	r, ok := f.wait(5 * time.Second)
	if !ok || r.key != int16(kmsg.EndTxn) || r.producer != 9 {
		t.Fatalf("the broker got %+v (%t), want the held EndTxn of producer 9", r, ok)
	}
	if r.at.Before(closedAt) {
		t.Errorf("EndTxn reached the broker before the client left")
	}
	if r2, ok := f.wait(5 * time.Second); !ok || r2.corr != 2 || r2.conn != r.conn {
		t.Errorf("the broker got %+v (%t), want the heartbeat after EndTxn on the same connection", r2, ok)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ev := a.Events()
		if len(ev) == 1 && !ev[0].Answered.IsZero() {
			if !ev[0].ClientGone || ev[0].Commit || ev[0].ErrName() != kerr.InvalidProducerEpoch.Error() {
				t.Errorf("event %v, want an abort delivered with the client gone and answered INVALID_PRODUCER_EPOCH", ev[0])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("events %v: the late EndTxn's answer was not read", ev)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Once the answers are read, the proxy closes the broker's side.
	for deadline := time.Now().Add(5 * time.Second); ; {
		f.mu.Lock()
		closed := f.closed
		f.mu.Unlock()
		if closed == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the proxy kept the broker's side open after the late answers")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDropResponseSilencesTheConnection: the EndTxn reaches the broker,
// its answer does not reach the client, nor does anything later, and what
// the client sends later does not reach the broker.
func TestDropResponseSilencesTheConnection(t *testing.T) {
	f := startFakeBroker(t)
	p := startProxy(t, f.ln.Addr().String())
	a := p.Arm(Fault{Key: int16(kmsg.EndTxn), Action: DropResponse,
		Match: func(r Request) bool { return r.Msg.(*kmsg.EndTxnRequest).Commit }}, 1)
	c := dialRaw(t, p.Addr())
	c.send(endTxn(5, 2, false), 1) // an abort: not matched
	if corr, ok := c.read(5 * time.Second); !ok || corr != 1 {
		t.Fatalf("correlation %d (%t), want the abort answered", corr, ok)
	}
	c.send(endTxn(5, 2, true), 2)
	if r, ok := f.wait(5 * time.Second); !ok || r.corr != 1 {
		t.Fatalf("the broker got %+v (%t), want the abort", r, ok)
	}
	if r, ok := f.wait(5 * time.Second); !ok || r.corr != 2 {
		t.Fatalf("the broker got %+v (%t), want the commit", r, ok)
	}
	c.send(heartbeat(), 3)
	if corr, ok := c.read(300 * time.Millisecond); ok {
		t.Fatalf("the client got a response (correlation %d) after the dropped one", corr)
	}
	if r, ok := f.wait(100 * time.Millisecond); ok {
		t.Errorf("the broker got %+v after the dropped response", r)
	}
	ev := a.Events()
	if len(ev) != 1 || ev[0].CorrelationID != 2 || ev[0].ErrName() != "NONE" {
		t.Errorf("events %v, want the commit, answered NONE", ev)
	}
}

// TestResponseOutOfOrderFails: a response that does not pair with the
// oldest unanswered request is an error of the proxy, reported.
func TestResponseOutOfOrderFails(t *testing.T) {
	f := startFakeBroker(t)
	f.corrOffset = 1
	p, err := Start("127.0.0.1:0", f.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c := dialRaw(t, p.Addr())
	c.send(heartbeat(), 1)
	if _, ok := c.read(5 * time.Second); ok {
		t.Error("a mispaired response reached the client")
	}
	if len(p.Errs()) != 1 {
		t.Errorf("proxy errors %v, want one", p.Errs())
	}
}

// TestFranzGoThroughTheProxy: a franz-go transactional producer on kfake,
// every connection dialled through the proxy, with its EndTxn held past
// its request timeout: franz-go gives up on the connection, sends the
// EndTxn again on a new one and commits; the held one reaches kfake late,
// the client gone.
func TestFranzGoThroughTheProxy(t *testing.T) {
	kf, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer kf.Close()
	p := startProxy(t, kf.ListenAddrs()[0])
	const timeout = time.Second
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(kf.ListenAddrs()...),
		kgo.TransactionalID("proxy-test"),
		kgo.RequestTimeoutOverhead(timeout),
		kgo.Dialer(func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, p.Addr())
		}),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 3 {
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "t", Value: []byte{byte(i)}}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		var a *Armed
		if i == 1 {
			a = p.Arm(Fault{Key: int16(kmsg.EndTxn), Action: Hold, Delay: 3 * timeout}, 1)
		}
		began := time.Now()
		if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
			t.Fatalf("transaction %d: %v", i, err)
		}
		if a == nil {
			continue
		}
		if took := time.Since(began); took < timeout {
			t.Errorf("EndTransaction took %v with its first EndTxn held, under the %v request timeout", took, timeout)
		}
		for deadline := time.Now().Add(5 * time.Second); ; {
			ev := a.Events()
			if len(ev) == 1 && !ev[0].Answered.IsZero() {
				if !ev[0].ClientGone || !ev[0].Commit {
					t.Errorf("event %v, want a commit delivered once the client had left", ev[0])
				}
				t.Logf("late EndTxn: %v", ev[0])
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("events %v: the held EndTxn was never answered", ev)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// TestAbortInsteadAndReleaseWhen: an EndTxn commit reaches the broker as an
// abort, whatever its version; a held request waits for ReleaseWhen; Seen
// counts requests by kind and version.
func TestAbortInsteadAndReleaseWhen(t *testing.T) {
	f := startFakeBroker(t)
	p := startProxy(t, f.ln.Addr().String())
	c := dialRaw(t, p.Addr())
	for i, v := range []int16{3, 5} { // the first flexible version, and transactions v2's
		p.Arm(Fault{Key: int16(kmsg.EndTxn), Action: AbortInstead}, 1)
		req := endTxn(1, 1, true)
		req.SetVersion(v)
		if _, err := c.c.Write(c.f.AppendRequest(nil, req, int32(10+i))); err != nil {
			t.Fatal(err)
		}
		if r, ok := f.wait(5 * time.Second); !ok || r.commit || r.producer != 1 {
			t.Errorf("EndTxn v%d reached the broker as %+v (%t), want an abort of producer 1", v, r, ok)
		}
		c.read(5 * time.Second)
	}
	req := endTxn(1, 1, true)
	req.SetVersion(1) // not flexible
	p.Arm(Fault{Key: int16(kmsg.EndTxn), Action: AbortInstead}, 1)
	c.c.Write(c.f.AppendRequest(nil, req, 12))
	if r, ok := f.wait(5 * time.Second); !ok || r.commit {
		t.Errorf("EndTxn v1 reached the broker as %+v (%t), want an abort", r, ok)
	}
	c.read(5 * time.Second)

	var open atomic.Bool
	p.Arm(Fault{Key: int16(kmsg.Heartbeat), Action: Hold, Delay: 50 * time.Millisecond, ReleaseWhen: open.Load}, 1)
	c.send(heartbeat(), 13)
	if r, ok := f.wait(300 * time.Millisecond); ok {
		t.Fatalf("the held heartbeat reached the broker (%+v) before ReleaseWhen", r)
	}
	open.Store(true)
	if r, ok := f.wait(5 * time.Second); !ok || r.corr != 13 {
		t.Fatalf("the broker got %+v (%t), want the heartbeat once released", r, ok)
	}
	if got := p.Seen(); got["EndTxn v3"] != 1 || got["EndTxn v5"] != 1 || got["EndTxn v1"] != 1 || got["Heartbeat v4"] != 1 {
		t.Errorf("seen %v", got)
	}
}
