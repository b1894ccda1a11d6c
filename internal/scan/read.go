package scan

import (
	"bufio"
	"bytes"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
)

// Buffer sizes. A chunk is what the reader fills at a time and what one
// batch of documents is cut from: large enough that the matcher's pool
// gets hundreds of records per batch, small enough that the few chunks in
// flight stay in the CPU's cache between the stages. The reserve in front
// of each chunk takes the end of the previous one that did not hold a whole
// document, so that the document is contiguous without copying the chunk.
const (
	chunkSize = 1 << 20
	reserve   = 256 << 10
)

// content is a file's content, decompressed, in the order it was written.
type content interface {
	// read reads into p. ends lists the offsets in p[:n] where a gzip
	// member ended (the offset after its last byte); err is io.EOF at the
	// end of the content.
	read(p []byte, ends []int) (n int, _ []int, err error)
}

type plainContent struct{ r io.Reader }

func (c plainContent) read(p []byte, ends []int) (int, []int, error) {
	n, err := c.r.Read(p)
	return n, ends, err
}

// gzipContent reads gzip member by member, so that it can say where each
// ends: a Firehose object is one member per CloudWatch Logs payload, and
// a payload that is cut short must not take the next ones with it.
type gzipContent struct {
	in      *bufio.Reader // the compressed stream; an io.ByteReader, so that a member is read to its end and not past it
	z       *gzip.Reader
	members int // members read to their end
}

func newGzipContent(in *bufio.Reader) (*gzipContent, error) {
	z, err := gzip.NewReader(in)
	if err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	z.Multistream(false)
	return &gzipContent{in: in, z: z}, nil
}

func (c *gzipContent) read(p []byte, ends []int) (int, []int, error) {
	n, err := c.z.Read(p)
	if err != io.EOF {
		if err != nil {
			err = fmt.Errorf("gzip member %d: %w", c.members+1, err)
		}
		return n, ends, err
	}
	c.members++
	ends = append(ends, n)
	if err := c.z.Reset(c.in); err != nil {
		if err == io.EOF {
			return n, ends, io.EOF
		}
		return n, ends, fmt.Errorf("gzip: after member %d: %w", c.members, err)
	}
	c.z.Multistream(false)
	return n, ends, nil
}

// gzipStream is a gzipContent read as one stream, for a gzip file whose
// content is gzip again.
type gzipStream struct{ c *gzipContent }

func (s gzipStream) Read(p []byte) (int, error) {
	n, _, err := s.c.read(p, nil)
	if n == 0 && err == nil {
		return s.Read(p) // an empty member
	}
	return n, err
}

const gzipMagic = "\x1f\x8b"

// openContent returns what r holds: its bytes, or, when it starts as gzip
// does, its content inflated. Content that is gzip again (Firehose
// compressing the gzip members a CloudWatch Logs subscription sends it) is
// inflated once more, and its members are the ones whose ends count.
func openContent(r io.Reader) (content, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	if magic, _ := br.Peek(2); string(magic) != gzipMagic {
		return plainContent{br}, nil
	}
	outer, err := newGzipContent(br)
	if err != nil {
		return nil, err
	}
	// The first two bytes of the content say whether it is gzip again.
	p := &prefixContent{rest: outer}
	var buf [2]byte
	for len(p.head) < 2 && p.err == nil {
		var n int
		at := len(p.ends)
		n, p.ends, p.err = outer.read(buf[:2-len(p.head)], p.ends)
		for i := at; i < len(p.ends); i++ {
			p.ends[i] += len(p.head)
		}
		p.head = append(p.head, buf[:n]...)
	}
	if string(p.head) != gzipMagic || p.err != nil {
		return p, nil
	}
	return newGzipContent(bufio.NewReaderSize(io.MultiReader(bytes.NewReader(p.head), gzipStream{outer}), 64<<10))
}

// prefixContent is the content's first bytes, already read, then the rest.
type prefixContent struct {
	head []byte
	ends []int // member ends in head
	err  error // what reading head ended with
	rest *gzipContent
	used bool
}

func (c *prefixContent) read(p []byte, ends []int) (int, []int, error) {
	if c.used {
		return c.rest.read(p, ends)
	}
	if len(p) < len(c.head) {
		return 0, ends, io.ErrShortBuffer
	}
	n := copy(p, c.head)
	ends, err := append(ends, c.ends...), c.err
	c.used = true
	return n, ends, err
}

// chunk is what the reader hands the framer: data in buf[start:end], and
// room for what the framer carries over in front of it.
type chunk struct {
	buf        []byte
	start, end int
	ends       []int // member ends, as indexes into buf
	err        error // io.EOF at the end of the content, or why reading stopped
}

// bufPool recycles chunk buffers between the stages and from file to file.
type bufPool chan []byte

func (p bufPool) get() []byte {
	select {
	case b := <-p:
		return b
	default:
		return make([]byte, reserve+chunkSize)
	}
}

func (p bufPool) put(b []byte) {
	if cap(b) != reserve+chunkSize {
		return
	}
	select {
	case p <- b[:cap(b)]:
	default:
	}
}

// readChunks fills chunks from c until its end or an error, which the last
// chunk carries. It stops early when stop is closed.
func readChunks(c content, pool bufPool, out chan<- *chunk, stop <-chan struct{}) {
	defer close(out)
	for {
		ch := &chunk{buf: pool.get(), start: reserve, end: reserve}
		for ch.end < len(ch.buf) && ch.err == nil {
			var n int
			start := len(ch.ends)
			n, ch.ends, ch.err = c.read(ch.buf[ch.end:], ch.ends)
			for i := start; i < len(ch.ends); i++ {
				ch.ends[i] += ch.end
			}
			ch.end += n
		}
		select {
		case out <- ch:
		case <-stop:
			return
		}
		if ch.err != nil {
			return
		}
	}
}
