package proxyinit

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Mode is an iptables backend: the kernel's nf_tables through the iptables-nft
// tools, or the older x_tables through iptables-legacy. Rules must go to the
// backend the rest of the node (CNI, kube-proxy) uses, or the two sets of
// rules are evaluated independently and in an order nobody chose.
type Mode string

const (
	ModeAuto   Mode = "auto"
	ModeNFT    Mode = "nft"
	ModeLegacy Mode = "legacy"
)

// ParseMode accepts the values of --iptables-mode.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeAuto, ModeNFT, ModeLegacy:
		return m, nil
	}
	return "", fmt.Errorf("unknown iptables mode %q: use auto, nft or legacy", s)
}

// Runner runs one iptables tool with stdin and returns its stdout. The real
// one is ExecRunner; tests replace it only to provoke failures that the real
// tools cannot be made to produce.
type Runner interface {
	Run(ctx context.Context, name string, args []string, stdin []byte) ([]byte, error)
}

// ExecRunner runs tools as child processes found by LookPath.
type ExecRunner struct {
	// LookPath resolves a tool name; nil means exec.LookPath. The CLI leaves
	// it nil; a library never reads PATH on its own initiative beyond this.
	LookPath func(string) (string, error)
	// Start starts a prepared command; nil means cmd.Start. Tests set it to
	// start the tools inside a network namespace of their own.
	Start func(*exec.Cmd) error
}

var _ Runner = ExecRunner{}

func (r ExecRunner) lookPath(name string) (string, error) {
	if r.LookPath != nil {
		return r.LookPath(name)
	}
	return exec.LookPath(name)
}

// Run implements Runner. A failure carries the tool's stderr, which is where
// iptables explains itself ("line 4 failed", "Permission denied").
func (r ExecRunner) Run(ctx context.Context, name string, args []string, stdin []byte) ([]byte, error) {
	path, err := r.lookPath(name)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, path, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := cmd.Start
	if r.Start != nil {
		start = func() error { return r.Start(cmd) }
	}
	err = start()
	if err == nil {
		err = cmd.Wait()
	}
	if err != nil {
		return nil, fmt.Errorf("running %s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// Backend names the tools of one family and one mode.
type Backend struct {
	Family  Family
	Mode    Mode
	Save    string // e.g. iptables-nft-save
	Restore string // e.g. iptables-nft-restore
}

func (b Backend) String() string {
	mode := "nf_tables"
	if b.Mode == ModeLegacy {
		mode = "legacy"
	}
	return fmt.Sprintf("%s (%s, %s)", b.Family, mode, b.Restore)
}

func toolBase(f Family) string {
	if f == IPv6 {
		return "ip6tables"
	}
	return "iptables"
}

func variant(f Family, m Mode) Backend {
	base := toolBase(f) + "-" + string(m)
	return Backend{Family: f, Mode: m, Save: base + "-save", Restore: base + "-restore"}
}

// DetectBackend chooses the tools for one family.
//
// With ModeNFT or ModeLegacy it uses that variant's tools (iptables-nft-save,
// ...), or the plain iptables tools if they report that mode. With ModeAuto
// it follows the rule Kubernetes' iptables-wrapper uses: when both variants
// are installed, the one that already holds more rules in this network
// namespace wins, because that is the one the node's other components
// write to; on a tie (a fresh pod) nf_tables wins, being the default of
// current distributions. A variant whose save tool fails (a kernel without
// nf_tables, say) counts as unavailable.
func DetectBackend(ctx context.Context, r Runner, f Family, m Mode) (Backend, error) {
	if m == "" {
		m = ModeAuto
	}
	modes := []Mode{m}
	if m == ModeAuto {
		modes = []Mode{ModeNFT, ModeLegacy}
	}
	best, bestRules, found := Backend{}, -1, false
	var errs []string
	for _, mode := range modes {
		b := variant(f, mode)
		out, err := r.Run(ctx, b.Save, nil, nil)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		if n := countRules(out); n > bestRules {
			best, bestRules, found = b, n, true
		}
	}
	if found {
		return best, nil
	}
	// Neither variant's tools are usable: fall back to the plain names and ask
	// them which backend they are.
	plain := Backend{Family: f, Save: toolBase(f) + "-save", Restore: toolBase(f) + "-restore"}
	out, err := r.Run(ctx, toolBase(f), []string{"--version"}, nil)
	if err != nil {
		return Backend{}, fmt.Errorf("detecting the iptables backend for %s: %w (also tried: %s)", f, err, strings.Join(errs, "; "))
	}
	switch v := string(out); {
	case strings.Contains(v, "nf_tables"):
		plain.Mode = ModeNFT
	case strings.Contains(v, "legacy"):
		plain.Mode = ModeLegacy
	default:
		return Backend{}, fmt.Errorf("detecting the iptables backend for %s: unrecognised %q", f, strings.TrimSpace(v))
	}
	if m != ModeAuto && plain.Mode != m {
		return Backend{}, fmt.Errorf("detecting the iptables backend for %s: %s tools not found and %s is %s", f, m, toolBase(f), plain.Mode)
	}
	return plain, nil
}

// countRules counts the rules in iptables-save output, all tables together.
func countRules(save []byte) int {
	n := 0
	for _, line := range strings.Split(string(save), "\n") {
		if strings.HasPrefix(line, "-A ") {
			n++
		}
	}
	return n
}
