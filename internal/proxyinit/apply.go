package proxyinit

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// Apply installs the rules with one `iptables-restore --noflush`, so that a
// pod never sees half of them. It is idempotent: the mesh's chains are
// flushed and refilled, and a jump from PREROUTING or OUTPUT is added only if
// it is not there already, so running init twice (a restarted init
// container) leaves the same rules as running it once. Rules of other owners
// are left alone.
func Apply(ctx context.Context, r Runner, b Backend, rules Rules) error {
	current, err := r.Run(ctx, b.Save, []string{"-t", "nat"}, nil)
	if err != nil {
		return fmt.Errorf("reading the nat table: %w", err)
	}
	script := ApplyScript(rules, current)
	if _, err := r.Run(ctx, b.Restore, []string{"--noflush"}, []byte(script)); err != nil {
		return fmt.Errorf("installing %s rules: %w", b.Family, err)
	}
	return nil
}

// ApplyScript returns the iptables-restore input that brings the nat table
// described by save (iptables-save output) to rules. It is pure; Apply and
// the tests share it.
func ApplyScript(rules Rules, save []byte) string {
	present := natRules(save)
	var missing []string
	for _, j := range rules.Jumps {
		if !slices.Contains(present, j) {
			missing = append(missing, j)
		}
	}
	return rules.script(missing)
}

// Remove deletes the jumps into the mesh's chains and the chains themselves,
// with one iptables-restore. It reports whether there was anything to
// remove; removing from a clean table is not an error.
func Remove(ctx context.Context, r Runner, b Backend) (bool, error) {
	current, err := r.Run(ctx, b.Save, []string{"-t", "nat"}, nil)
	if err != nil {
		return false, fmt.Errorf("reading the nat table: %w", err)
	}
	script, ok := RemoveScript(current)
	if !ok {
		return false, nil
	}
	if _, err := r.Run(ctx, b.Restore, []string{"--noflush"}, []byte(script)); err != nil {
		return false, fmt.Errorf("removing %s rules: %w", b.Family, err)
	}
	return true, nil
}

// RemoveScript returns the iptables-restore input that removes the mesh's
// rules from the nat table described by save, and false when there is
// nothing of the mesh's in it. Every jump into a mesh chain is deleted, in
// whatever spelling and however many times it occurs, so that rules of an
// older or newer meshproxy are removed too.
func RemoveScript(save []byte) (string, bool) {
	var b strings.Builder
	b.WriteString("*nat\n")
	chains := chainsIn(save)
	found := len(chains) > 0
	for _, line := range natRules(save) {
		fields := strings.Fields(line)
		if len(fields) < 2 || isOwnChain(fields[1]) {
			continue // rules inside our chains go with the flush
		}
		if i := slices.Index(fields, "-j"); i >= 0 && i+1 < len(fields) && isOwnChain(fields[i+1]) {
			b.WriteString("-D" + strings.TrimPrefix(line, "-A") + "\n")
			found = true
		}
	}
	// Flush all first: a chain cannot be deleted while another still jumps
	// to it.
	for _, c := range chains {
		fmt.Fprintf(&b, "-F %s\n", c)
	}
	for _, c := range chains {
		fmt.Fprintf(&b, "-X %s\n", c)
	}
	b.WriteString("COMMIT\n")
	return b.String(), found
}

func isOwnChain(name string) bool {
	return slices.Contains(ownChains, name)
}

// natLines returns the lines of the nat table in iptables-save output,
// trimmed.
func natLines(save []byte) []string {
	var out []string
	inNat := false
	for _, line := range strings.Split(string(save), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "*") {
			inNat = line == "*nat"
			continue
		}
		if inNat {
			out = append(out, line)
		}
	}
	return out
}

// natRules returns the "-A ..." lines of the nat table in iptables-save
// output.
func natRules(save []byte) []string {
	var out []string
	for _, line := range natLines(save) {
		if strings.HasPrefix(line, "-A ") {
			out = append(out, line)
		}
	}
	return out
}

// chainsIn returns the mesh's chains declared in the nat table of save.
func chainsIn(save []byte) []string {
	var out []string
	for _, line := range natLines(save) {
		if !strings.HasPrefix(line, ":") {
			continue
		}
		if name, _, _ := strings.Cut(line[1:], " "); isOwnChain(name) {
			out = append(out, name)
		}
	}
	return out
}
