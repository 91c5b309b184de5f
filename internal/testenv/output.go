package testenv

import (
	"bytes"
	"sync"
)

// Output collects what a component under test writes (its logs, a child
// process's stdout) while the test reads it: writes come from other
// goroutines, so a plain bytes.Buffer would race.
type Output struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(p)
}

// String returns everything written so far.
func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}
