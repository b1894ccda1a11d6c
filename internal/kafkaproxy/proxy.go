// Package kafkaproxy is a TCP proxy for tests that understands Kafka's
// framing: it reads every request a client sends (int32 size, int16 API
// key, int16 version, int32 correlation id, then the body) and pairs each
// response from the broker with its request by order, which Kafka keeps
// on a connection. On that it builds two faults aimed at single requests,
// which a byte-level proxy (toxiproxy) cannot aim:
//
//   - Hold: a chosen request, and everything the client sends after it on
//     the same connection, reaches the broker only after a delay, even
//     when the client has given up and closed its side meanwhile: the
//     proxy keeps the broker's side open, writes the held bytes late and
//     reads and discards the answers. This is a request delayed in the
//     network past the client's request timeout and delivered stale.
//   - DropResponse: a chosen request reaches the broker, its answer never
//     reaches the client, and the connection is silent both ways from then
//     on until the client closes it: the outcome of the request is unknown
//     to the client.
//
// The integration tests use it (the transaction safety test and the
// recovery test); it is not in kafkatest because it needs no Docker and is
// unit tested on its own. It decodes the requests and responses it acts on
// with kmsg, to say what it held or dropped (producer id, epoch, commit or
// abort) and what the broker answered to a late request. It does not
// rewrite anything: the broker must advertise the proxy's address for a
// client's every connection to go through it.
package kafkaproxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Action is what a Fault does to the requests it matches.
type Action int

const (
	// Hold delays the request, and what follows it on its connection,
	// by Fault.Delay.
	Hold Action = iota + 1
	// DropResponse forwards the request, drops its response and silences
	// the connection.
	DropResponse
	// AbortInstead forwards an EndTxn that asks to commit as one that
	// asks to abort, and the broker's answer as is: the client believes
	// it committed. A sabotage, to show that a test's oracle catches a
	// transaction whose outcome is not what its client was told.
	AbortInstead
)

func (a Action) String() string {
	switch a {
	case Hold:
		return "hold"
	case DropResponse:
		return "drop-response"
	case AbortInstead:
		return "abort-instead"
	}
	return "none"
}

// Request is what the proxy read of a request: its header, and its body
// decoded with kmsg when the proxy knows the key (nil otherwise).
type Request struct {
	Key, Version  int16
	CorrelationID int32
	Msg           kmsg.Request
}

// Fault says which requests to act on and how.
type Fault struct {
	Key    int16
	Action Action
	// Delay is how long after it reached the proxy a held request is
	// written to the broker.
	Delay time.Duration
	// Match, if set, must also accept the request.
	Match func(Request) bool
	// ReleaseWhen, if set, is polled once Delay has passed, for up to
	// 30 s, and a held request is written only once it returns true: a
	// test aims the late request at a state of the broker's (a
	// transaction open).
	ReleaseWhen func() bool
}

// Event is one request a fault acted on.
type Event struct {
	Conn          int // the proxy's number for the client connection
	Action        Action
	Key, Version  int16
	CorrelationID int32
	// ProducerID, ProducerEpoch: those the request carries (the
	// transactional requests all do), else -1.
	ProducerID    int64
	ProducerEpoch int16
	// Commit is EndTxn's; TransactionalID the transactional requests'.
	Commit          bool
	TransactionalID string
	// Arrived is when the proxy read the request; Delivered when it
	// wrote it to the broker (zero until then).
	Arrived, Delivered time.Time
	// ClientGone: the client had closed its connection when the request
	// was delivered, i.e. it had given up on it.
	ClientGone bool
	// Answered is when the broker's response was read (zero until then);
	// ErrorCode is the first non-zero error code in it (0 if none),
	// -2 if the proxy could not decode it.
	Answered  time.Time
	ErrorCode int16
}

// ErrName is the name of the event's response error, "NONE" for none.
func (e Event) ErrName() string {
	switch {
	case e.Answered.IsZero():
		return "unanswered"
	case e.ErrorCode == 0:
		return "NONE"
	case e.ErrorCode == -2:
		return "undecodable"
	}
	if err := kerr.ErrorForCode(e.ErrorCode); err != nil {
		return err.Error()
	}
	return fmt.Sprintf("code %d", e.ErrorCode)
}

func (e Event) String() string {
	s := fmt.Sprintf("%s %s v%d (conn %d, correlation %d, producer %d/%d", e.Action, kmsg.NameForKey(e.Key), e.Version,
		e.Conn, e.CorrelationID, e.ProducerID, e.ProducerEpoch)
	if e.Key == int16(kmsg.EndTxn) {
		s += fmt.Sprintf(", commit %t", e.Commit)
	}
	s += ")"
	if !e.Delivered.IsZero() {
		s += fmt.Sprintf(", delivered after %v", e.Delivered.Sub(e.Arrived).Round(time.Millisecond))
		if e.ClientGone {
			s += " (client gone)"
		}
	}
	if !e.Answered.IsZero() {
		s += ", broker answered " + e.ErrName()
	}
	return s
}

// Armed is a fault in force.
type Armed struct {
	p     *Proxy
	fault Fault
	left  int // matches left; negative: until Disarm
	hits  []*Event
}

// Proxy forwards connections from its listener to one upstream address.
type Proxy struct {
	ln       net.Listener
	upstream string

	mu     sync.Mutex
	armed  []*Armed
	seen   map[string]int
	conns  map[*conn]struct{}
	nextID int
	errs   []error
	closed bool
	wg     sync.WaitGroup
}

// Start listens on listen ("127.0.0.1:0" for any port) and forwards each
// connection to upstream.
func Start(listen, upstream string) (*Proxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("kafkaproxy: listening: %w", err)
	}
	p := &Proxy{ln: ln, upstream: upstream, conns: map[*conn]struct{}{}, seen: map[string]int{}}
	p.wg.Go(p.accept)
	return p, nil
}

// Addr is the address the proxy listens on.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Close stops listening and closes every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	conns := make([]*conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	err := p.ln.Close()
	for _, c := range conns {
		c.closeBoth()
	}
	p.wg.Wait()
	return err
}

// Errs returns what went wrong in the proxy itself (a response that did
// not pair with its request, a dial that failed): a test should fail on
// any.
func (p *Proxy) Errs() []error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]error(nil), p.errs...)
}

func (p *Proxy) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.errs = append(p.errs, err)
}

// Arm puts f in force for the next n requests it matches, on any
// connection; n < 0 means until Disarm.
func (p *Proxy) Arm(f Fault, n int) *Armed {
	a := &Armed{p: p, fault: f, left: n}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armed = append(p.armed, a)
	return a
}

// Seen returns how many requests of each kind and version the proxy has
// read, keyed "Name vN".
func (p *Proxy) Seen() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(p.seen))
	for k, n := range p.seen {
		out[k] = n
	}
	return out
}

// Disarm takes the fault out of force; what it already holds is still
// delivered.
func (a *Armed) Disarm() {
	a.p.mu.Lock()
	defer a.p.mu.Unlock()
	a.left = 0
}

// Events returns a copy of what the fault did so far.
func (a *Armed) Events() []Event {
	a.p.mu.Lock()
	defer a.p.mu.Unlock()
	out := make([]Event, len(a.hits))
	for i, e := range a.hits {
		out[i] = *e
	}
	return out
}

// match returns the fault that takes r, counting the hit, or nil. Called
// with p.mu held.
func (p *Proxy) match(r Request) *Armed {
	for _, a := range p.armed {
		if a.left == 0 || a.fault.Key != r.Key {
			continue
		}
		if a.fault.Match != nil && (r.Msg == nil || !a.fault.Match(r)) {
			continue
		}
		if a.left > 0 {
			a.left--
		}
		return a
	}
	return nil
}

func (p *Proxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		upstream, err := net.DialTimeout("tcp", p.upstream, 10*time.Second)
		if err != nil {
			// The broker is down: the client sees its connection closed,
			// as it would see a refused one.
			client.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			client.Close()
			upstream.Close()
			return
		}
		p.nextID++
		c := &conn{p: p, id: p.nextID, client: client, upstream: upstream}
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Go(c.requests)
		p.wg.Go(c.responses)
	}
}

// conn is one client connection and its upstream connection.
type conn struct {
	p                *Proxy
	id               int
	client, upstream net.Conn

	// Guarded by p.mu: the state both directions share.
	pending    []pending // written upstream, not yet answered, in order
	held       [][]byte  // frames held, the first the fault's
	heldReqs   []pending
	silent     bool // a request's response is dropped: nothing flows any more
	clientGone bool
	upDone     bool
}

type pending struct {
	req   Request
	event *Event // the fault's record, for the requests a fault took
	drop  bool
}

// requests reads the client's frames and forwards, holds or drops them.
func (c *conn) requests() {
	for {
		frame, err := readFrame(c.client)
		if err != nil {
			c.p.mu.Lock()
			c.clientGone = true
			c.maybeCloseUpstream()
			c.p.mu.Unlock()
			return
		}
		req, err := parseRequest(frame[4:])
		if err != nil {
			c.p.fail(fmt.Errorf("kafkaproxy: conn %d: %w", c.id, err))
			c.closeBoth()
			return
		}
		c.p.mu.Lock()
		c.p.seen[fmt.Sprintf("%s v%d", kmsg.NameForKey(req.Key), req.Version)]++
		switch {
		case c.silent:
			// The connection is black-holed: what the client sends now is
			// lost.
		case c.held != nil:
			c.held = append(c.held, frame)
			c.heldReqs = append(c.heldReqs, pending{req: req})
		default:
			a := c.p.match(req)
			if a == nil {
				c.forward(frame, pending{req: req})
				break
			}
			e := newEvent(c.id, a.fault.Action, req)
			a.hits = append(a.hits, e)
			switch a.fault.Action {
			case Hold:
				c.held = [][]byte{frame}
				c.heldReqs = []pending{{req: req, event: e}}
				when := a.fault.ReleaseWhen
				time.AfterFunc(a.fault.Delay, func() {
					for deadline := time.Now().Add(30 * time.Second); when != nil && !when() && time.Now().Before(deadline); {
						time.Sleep(2 * time.Millisecond)
					}
					c.release()
				})
			case AbortInstead:
				if m, ok := req.Msg.(*kmsg.EndTxnRequest); ok && m.Commit {
					// Commit is the body's last field, before the tags
					// (none: one zero byte) of a flexible version.
					at := len(frame) - 1
					if m.IsFlexible() {
						if frame[at] != 0 {
							c.p.errs = append(c.p.errs, fmt.Errorf("kafkaproxy: conn %d: EndTxn with tagged fields, not rewritten", c.id))
						}
						at--
					}
					frame[at] = 0
				}
				c.forward(frame, pending{req: req, event: e})
			case DropResponse:
				c.forward(frame, pending{req: req, event: e, drop: true})
				// Nothing the client sends after it reaches the broker.
				c.silent = true
			}
		}
		c.p.mu.Unlock()
	}
}

// forward writes a frame upstream. Called with p.mu held: a response
// cannot be read before its request is pending.
func (c *conn) forward(frame []byte, pr pending) {
	if c.upDone {
		return
	}
	if pr.event != nil {
		pr.event.Delivered = time.Now()
		pr.event.ClientGone = c.clientGone
	}
	c.pending = append(c.pending, pr)
	c.upstream.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.upstream.Write(frame); err != nil {
		c.upDone = true
		c.upstream.Close()
		c.client.Close()
	}
}

// release writes the held frames upstream, late.
func (c *conn) release() {
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	held, reqs := c.held, c.heldReqs
	c.held, c.heldReqs = nil, nil
	for i, f := range held {
		c.forward(f, reqs[i])
	}
	c.maybeCloseUpstream()
}

// maybeCloseUpstream closes the broker's side once the client is gone and
// nothing held or unanswered is left. Called with p.mu held.
func (c *conn) maybeCloseUpstream() {
	if c.clientGone && c.held == nil && len(c.pending) == 0 && !c.upDone {
		c.upDone = true
		c.upstream.Close()
	}
}

// responses reads the broker's frames, pairs each with its request, and
// forwards it unless the client is gone or the connection silenced.
func (c *conn) responses() {
	defer func() {
		c.client.Close()
		c.p.mu.Lock()
		c.upDone = true
		delete(c.p.conns, c)
		c.p.mu.Unlock()
		c.upstream.Close()
	}()
	for {
		frame, err := readFrame(c.upstream)
		if err != nil {
			return
		}
		if len(frame) < 8 {
			c.p.fail(fmt.Errorf("kafkaproxy: conn %d: a response of %d bytes", c.id, len(frame)-4))
			return
		}
		corr := int32(binary.BigEndian.Uint32(frame[4:]))
		c.p.mu.Lock()
		if len(c.pending) == 0 {
			c.p.mu.Unlock()
			c.p.fail(fmt.Errorf("kafkaproxy: conn %d: a response (correlation %d) to no request", c.id, corr))
			return
		}
		pr := c.pending[0]
		c.pending = c.pending[1:]
		if pr.req.CorrelationID != corr {
			c.p.mu.Unlock()
			c.p.fail(fmt.Errorf("kafkaproxy: conn %d: response correlation %d, request %d (%s)", c.id, corr, pr.req.CorrelationID, kmsg.NameForKey(pr.req.Key)))
			return
		}
		if pr.event != nil {
			pr.event.Answered = time.Now()
			pr.event.ErrorCode = responseError(pr.req, frame[8:])
		}
		// Answers to what the client sent before the dropped request
		// still reach it; Kafka answers in order, so none comes after.
		deliver := !pr.drop && !c.clientGone
		c.maybeCloseUpstream()
		c.p.mu.Unlock()
		if deliver {
			c.client.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.client.Write(frame); err != nil {
				// The client went away; the broker's side stays open for
				// whatever is still held or unanswered.
				c.p.mu.Lock()
				c.clientGone = true
				c.maybeCloseUpstream()
				c.p.mu.Unlock()
			}
		}
	}
}

func (c *conn) closeBoth() {
	c.client.Close()
	c.upstream.Close()
}

func newEvent(conn int, a Action, r Request) *Event {
	e := &Event{Conn: conn, Action: a, Key: r.Key, Version: r.Version, CorrelationID: r.CorrelationID,
		Arrived: time.Now(), ProducerID: -1, ProducerEpoch: -1}
	switch m := r.Msg.(type) {
	case *kmsg.EndTxnRequest:
		e.ProducerID, e.ProducerEpoch, e.Commit, e.TransactionalID = m.ProducerID, m.ProducerEpoch, m.Commit, m.TransactionalID
	case *kmsg.AddOffsetsToTxnRequest:
		e.ProducerID, e.ProducerEpoch, e.TransactionalID = m.ProducerID, m.ProducerEpoch, m.TransactionalID
	case *kmsg.TxnOffsetCommitRequest:
		e.ProducerID, e.ProducerEpoch, e.TransactionalID = m.ProducerID, m.ProducerEpoch, m.TransactionalID
	case *kmsg.AddPartitionsToTxnRequest:
		e.ProducerID, e.ProducerEpoch, e.TransactionalID = m.ProducerID, m.ProducerEpoch, m.TransactionalID
	}
	return e
}

// maxFrame bounds a frame: Kafka's own default socket.request.max.bytes is
// 100 MiB.
const maxFrame = 128 << 20

// readFrame reads one frame, its size included.
func readFrame(r io.Reader) ([]byte, error) {
	var size [4]byte
	if _, err := io.ReadFull(r, size[:]); err != nil {
		return nil, err
	}
	n := int32(binary.BigEndian.Uint32(size[:]))
	if n < 0 || n > maxFrame {
		return nil, fmt.Errorf("kafkaproxy: frame of %d bytes", n)
	}
	frame := make([]byte, 4+n)
	copy(frame, size[:])
	if _, err := io.ReadFull(r, frame[4:]); err != nil {
		return nil, err
	}
	return frame, nil
}

// parseRequest reads a request's header and, for the keys kmsg knows,
// decodes its body.
func parseRequest(body []byte) (Request, error) {
	if len(body) < 8 {
		return Request{}, fmt.Errorf("a request of %d bytes", len(body))
	}
	r := Request{
		Key:           int16(binary.BigEndian.Uint16(body)),
		Version:       int16(binary.BigEndian.Uint16(body[2:])),
		CorrelationID: int32(binary.BigEndian.Uint32(body[4:])),
	}
	msg := kmsg.RequestForKey(r.Key)
	if msg == nil {
		return r, nil
	}
	msg.SetVersion(r.Version)
	rest := body[8:]
	if r.Key == int16(kmsg.ControlledShutdown) && r.Version == 0 {
		return r, nil // no client id in this one
	}
	if len(rest) < 2 {
		return r, errors.New("a request header without its client id")
	}
	if n := int16(binary.BigEndian.Uint16(rest)); n > 0 {
		if len(rest) < 2+int(n) {
			return r, errors.New("a request header cut in its client id")
		}
		rest = rest[2+int(n):]
	} else {
		rest = rest[2:]
	}
	if msg.IsFlexible() {
		var err error
		if rest, err = skipTags(rest); err != nil {
			return r, fmt.Errorf("%s v%d header: %w", kmsg.NameForKey(r.Key), r.Version, err)
		}
	}
	if err := msg.ReadFrom(rest); err == nil {
		r.Msg = msg
	}
	return r, nil
}

// responseError returns the first non-zero error code of the response to
// r (body after the correlation id), 0 if none, -2 if undecodable.
func responseError(r Request, body []byte) int16 {
	if r.Msg == nil {
		return -2
	}
	resp := r.Msg.ResponseKind()
	resp.SetVersion(r.Version)
	// Response headers are flexible with their request, but for
	// ApiVersions.
	if resp.IsFlexible() && r.Key != int16(kmsg.ApiVersions) {
		var err error
		if body, err = skipTags(body); err != nil {
			return -2
		}
	}
	if err := resp.ReadFrom(body); err != nil {
		return -2
	}
	switch m := resp.(type) {
	case *kmsg.EndTxnResponse:
		return m.ErrorCode
	case *kmsg.AddOffsetsToTxnResponse:
		return m.ErrorCode
	case *kmsg.TxnOffsetCommitResponse:
		for _, t := range m.Topics {
			for _, p := range t.Partitions {
				if p.ErrorCode != 0 {
					return p.ErrorCode
				}
			}
		}
		return 0
	case *kmsg.HeartbeatResponse:
		return m.ErrorCode
	case *kmsg.InitProducerIDResponse:
		return m.ErrorCode
	}
	return 0
}

// skipTags skips a tagged-field section (KIP-482).
func skipTags(b []byte) ([]byte, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 {
		return nil, errors.New("bad tag count")
	}
	b = b[k:]
	for range n {
		if _, k = binary.Uvarint(b); k <= 0 {
			return nil, errors.New("bad tag")
		}
		b = b[k:]
		size, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < size {
			return nil, errors.New("bad tag size")
		}
		b = b[k+int(size):]
	}
	return b, nil
}
