package cloudtrailgen

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"strconv"
)

// Low-level writers: random strings, times and JSON text, all appending to
// a caller's buffer so that a record costs no allocation.

const (
	hexLower = "0123456789abcdef"
	hexUpper = "0123456789ABCDEF"
	base32   = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	alnum    = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz01"
	b64      = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
)

// appendRandom appends n characters of alphabet, whose length must be
// 1<<bits, drawing 64 bits at a time.
func appendRandom(b []byte, src *rand.PCG, n int, alphabet string, bits uint) []byte {
	l := len(b)
	b = slices.Grow(b, n)[:l+n]
	out := b[l:]
	mask := uint64(1)<<bits - 1
	for i := 0; i < n; {
		u := src.Uint64()
		for k := 64 / bits; k > 0 && i < n; k-- {
			out[i] = alphabet[u&mask]
			u >>= bits
			i++
		}
	}
	return b
}

func (g *Generator) hex(b []byte, n int) []byte    { return appendRandom(b, g.src, n, hexLower, 4) }
func (g *Generator) upHex(b []byte, n int) []byte  { return appendRandom(b, g.src, n, hexUpper, 4) }
func (g *Generator) keyID(b []byte, n int) []byte  { return appendRandom(b, g.src, n, base32, 5) }
func (g *Generator) alnum(b []byte, n int) []byte  { return appendRandom(b, g.src, n, alnum, 6) }
func (g *Generator) base64(b []byte, n int) []byte { return appendRandom(b, g.src, n, b64, 6) }

func (g *Generator) digits(b []byte, n int) []byte {
	for range n {
		b = append(b, byte('0'+g.rng.IntN(10)))
	}
	return b
}

// appendUUID appends a random version 4 UUID.
func appendUUID(b []byte, r *rand.PCG) []byte {
	hi, lo := r.Uint64(), r.Uint64()
	hi = hi&^(0xf<<12) | 4<<12   // version 4
	lo = lo&^(0x3<<62) | 0x2<<62 // variant 10
	for i := 60; i >= 0; i -= 4 {
		if i == 28 || i == 12 {
			b = append(b, '-')
		}
		b = append(b, hexLower[hi>>uint(i)&0xf])
	}
	for i := 60; i >= 0; i -= 4 {
		if i == 60 || i == 44 {
			b = append(b, '-')
		}
		b = append(b, hexLower[lo>>uint(i)&0xf])
	}
	return b
}

func (g *Generator) uuid(b []byte) []byte { return appendUUID(b, g.src) }

// appendTime appends the Unix second sec as "2006-01-02T15:04:05Z", without
// the cost of time.Time (the civil-from-days algorithm of H. Hinnant).
func appendTime(b []byte, sec int64) []byte {
	days := sec / 86400
	rem := sec % 86400
	if rem < 0 {
		rem += 86400
		days--
	}
	z := days + 719468
	era := z / 146097
	if z < 0 && z%146097 != 0 {
		era--
	}
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	y := yoe + era*400
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d := doy - (153*mp+2)/5 + 1
	m := mp + 3
	if mp >= 10 {
		m = mp - 9
	}
	if m <= 2 {
		y++
	}
	b = append4(b, int(y))
	b = append(b, '-')
	b = append2(b, int(m))
	b = append(b, '-')
	b = append2(b, int(d))
	b = append(b, 'T')
	b = append2(b, int(rem/3600))
	b = append(b, ':')
	b = append2(b, int(rem/60%60))
	b = append(b, ':')
	b = append2(b, int(rem%60))
	return append(b, 'Z')
}

func append2(b []byte, v int) []byte { return append(b, byte('0'+v/10), byte('0'+v%10)) }
func append4(b []byte, v int) []byte {
	return append(b, byte('0'+v/1000%10), byte('0'+v/100%10), byte('0'+v/10%10), byte('0'+v%10))
}

// appendTimeMillis appends "2006-01-02T15:04:05.000Z".
func appendTimeMillis(b []byte, ms int64) []byte {
	b = appendTime(b, floorDiv(ms, 1000))
	b = b[:len(b)-1]
	f := int(ms - floorDiv(ms, 1000)*1000)
	return append(b, '.', byte('0'+f/100), byte('0'+f/10%10), byte('0'+f%10), 'Z')
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// eventTime appends the current event time, formatting each second once.
func (g *Generator) eventTime(b []byte, sec int64) []byte {
	if sec != g.timeSec {
		appendTime(g.timeBuf[:0], sec)
		g.timeSec = sec
	}
	return append(b, g.timeBuf[:]...)
}

// jsonEscape is, for each byte, 0 if it stands for itself inside a JSON
// string, 'u' if it must be written \u00XX, or the letter after the
// backslash.
var jsonEscape = func() (t [256]byte) {
	for c := range 0x20 {
		t[c] = 'u'
	}
	t['"'], t['\\'], t['\n'], t['\r'], t['\t'] = '"', '\\', 'n', 'r', 't'
	return t
}()

// appendJSONString appends s as the contents of a JSON string (without the
// quotes), escaping what JSON requires.
func appendJSONString(b []byte, s []byte) []byte {
	n := len(b)
	b = slices.Grow(b, 2*len(s)+6)
	out := b[n : n+2*len(s)+6]
	j := 0
	for i, c := range s {
		e := jsonEscape[c]
		if e == 0 {
			out[j] = c
			j++
			continue
		}
		if e == 'u' {
			// Rare (a record holds no raw control bytes): finish slowly.
			b = b[:n+j]
			for _, c := range s[i:] {
				switch e := jsonEscape[c]; e {
				case 0:
					b = append(b, c)
				case 'u':
					b = append(b, '\\', 'u', '0', '0', hexLower[c>>4], hexLower[c&0xf])
				default:
					b = append(b, '\\', e)
				}
			}
			return b
		}
		out[j], out[j+1] = '\\', e
		j += 2
	}
	return b[:n+j]
}

// appendEscapedAt appends s with the byte at k written as a \u escape,
// the hex digits in upper or lower case.
func appendEscapedAt(b []byte, s string, k int, upper bool) []byte {
	digits := hexLower
	if upper {
		digits = hexUpper
	}
	b = append(b, s[:k]...)
	b = append(b, '\\', 'u', '0', '0', digits[s[k]>>4], digits[s[k]&0xf])
	return append(b, s[k+1:]...)
}

func appendInt(b []byte, v int64) []byte { return strconv.AppendInt(b, v, 10) }

// key appends "k":.
func key(b []byte, k string) []byte {
	b = append(b, '"')
	b = append(b, k...)
	return append(b, '"', ':')
}

// str appends the string value s, which must need no escaping.
func str(b []byte, s string) []byte {
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// kv appends "k":"v" for values that need no escaping.
func kv(b []byte, k, v string) []byte {
	return str(key(b, k), v)
}

// appendSpaced rewrites compact JSON src with a space after ':' and ',', as
// Python's json.dumps writes it.
func appendSpaced(dst, src []byte) []byte {
	return appendReformatted(dst, src, "")
}

// appendIndented rewrites compact JSON src indented by indent, as
// json.Indent does, but without validating it again.
func appendIndented(dst, src []byte, indent string) []byte {
	return appendReformatted(dst, src, indent)
}

func appendReformatted(dst, src []byte, indent string) []byte {
	depth := 0
	newline := func(dst []byte) []byte {
		dst = append(dst, '\n')
		for range depth {
			dst = append(dst, indent...)
		}
		return dst
	}
	for i := 0; i < len(src); i++ {
		c := src[i]
		switch c {
		case '"':
			j := stringEnd(src, i)
			dst = append(dst, src[i:j]...)
			i = j - 1
		case ':':
			dst = append(dst, ':', ' ')
		case ',':
			if indent == "" {
				dst = append(dst, ',', ' ')
			} else {
				dst = newline(append(dst, ','))
			}
		case '{', '[':
			dst = append(dst, c)
			if indent == "" {
				continue
			}
			if i+1 < len(src) && (src[i+1] == '}' || src[i+1] == ']') {
				dst = append(dst, src[i+1])
				i++
				continue
			}
			depth++
			dst = newline(dst)
		case '}', ']':
			if indent != "" {
				depth--
				dst = newline(dst)
			}
			dst = append(dst, c)
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// stringEnd returns the index after the JSON string that opens at i.
func stringEnd(src []byte, i int) int {
	for j := i + 1; ; {
		k := bytes.IndexByte(src[j:], '"')
		if k < 0 {
			return len(src)
		}
		j += k
		n := 0
		for src[j-1-n] == '\\' {
			n++
		}
		j++
		if n%2 == 0 {
			return j
		}
	}
}
