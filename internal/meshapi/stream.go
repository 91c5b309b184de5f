package meshapi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// MaxMessageBytes bounds one line of either stream, so that a peer cannot
// make the other side buffer without end. The largest message is the whole
// endpoint set of one service: 4 MiB holds about 20,000 endpoints.
const MaxMessageBytes = 4 << 20

// ErrMessageTooLarge is returned by Decoder.Decode for a line past its
// limit.
var ErrMessageTooLarge = errors.New("meshapi: message exceeds the size limit")

// Encode returns v as one line of a stream: compact JSON and a newline.
// The controller encodes each resource version once and writes the same
// bytes to every subscriber.
func Encode(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil { // Encode appends the newline
		return nil, fmt.Errorf("encoding %T: %w", v, err)
	}
	return b.Bytes(), nil
}

// Decoder reads the lines of a stream.
type Decoder struct {
	r   *bufio.Reader
	max int
}

// decoderBufferBytes is the read buffer of a Decoder. The controller holds
// one decoder per connected proxy and most lines (ACKs, subscriptions,
// endpoint deltas) are far smaller than this, so it is small; a longer line
// is gathered from several reads.
const decoderBufferBytes = 4 << 10

// NewDecoder reads from r lines of at most max bytes (MaxMessageBytes when
// max <= 0).
func NewDecoder(r io.Reader, max int) *Decoder {
	if max <= 0 {
		max = MaxMessageBytes
	}
	return &Decoder{r: bufio.NewReaderSize(r, decoderBufferBytes), max: max}
}

// Decode reads the next line into v. Unknown fields are refused, so that
// a peer speaking a newer contract is told rather than half understood.
// It returns io.EOF at a clean end of stream.
func (d *Decoder) Decode(v any) error {
	line, err := d.line()
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decoding %T: %w", v, err)
	}
	if rest := bytes.Trim(line[dec.InputOffset():], " \t\r\n"); len(rest) != 0 { // JSON's whitespace only
		return fmt.Errorf("decoding %T: more than one JSON document on a line", v)
	}
	return nil
}

func (d *Decoder) line() ([]byte, error) {
	var buf []byte
	for {
		chunk, err := d.r.ReadSlice('\n')
		if len(buf)+len(chunk) > d.max+1 {
			return nil, ErrMessageTooLarge
		}
		switch {
		case err == nil:
			if buf == nil {
				// The common case: the line fits in the reader's buffer.
				// It is only valid until the next read, which is fine
				// because Decode is done with it by then.
				return chunk, nil
			}
			return append(buf, chunk...), nil
		case errors.Is(err, bufio.ErrBufferFull):
			buf = append(buf, chunk...)
		case errors.Is(err, io.EOF):
			if len(buf)+len(chunk) == 0 {
				return nil, io.EOF
			}
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}
