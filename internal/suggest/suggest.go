// Package suggest finds what a misspelt name was meant to be, for the
// "did you mean" of error messages. It imports only the standard library,
// so that the sidecar may use it.
package suggest

import (
	"iter"
	"strings"
)

// Nearest returns the candidate closest to name, ignoring case, within
// maxDistance edits; of several as close, the first in byte order. It
// returns "" when none is that close.
func Nearest(name string, candidates iter.Seq[string], maxDistance int) string {
	best, bestD := "", maxDistance+1
	lower := strings.ToLower(name)
	for c := range candidates {
		if d := Distance(lower, strings.ToLower(c)); d < bestD || d == bestD && c < best {
			best, bestD = c, d
		}
	}
	return best
}

// Distance is the Levenshtein distance of two short strings, in bytes.
func Distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
