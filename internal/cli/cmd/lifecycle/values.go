// Package lifecycle holds the commands that put the control plane on a
// cluster, move it to a new version and take it away: install, upgrade and
// uninstall. They share the values flags, the progress display and the
// mapping of failures to exit codes.
package lifecycle

import (
	"errors"
	"fmt"

	"github.com/spf13/pflag"

	"github.com/meshctl/mesh/internal/cli/command"
	"github.com/meshctl/mesh/internal/install"
	"github.com/meshctl/mesh/internal/install/render"
)

// valuesFlags are Helm's value flags, as install and upgrade take them.
type valuesFlags struct {
	files, set, setString, setFile []string
}

func (v *valuesFlags) addFlags(fs *pflag.FlagSet) {
	fs.StringArrayVarP(&v.files, "values", "f", nil, "values file (YAML); repeatable, later files win")
	fs.StringArrayVar(&v.set, "set", nil, "set a value: key=value, a.b[0]=x (Helm syntax); repeatable")
	fs.StringArrayVar(&v.setString, "set-string", nil, "set a value as a string: key=value; repeatable")
	fs.StringArrayVar(&v.setFile, "set-file", nil, "set a value to a file's content: key=path; repeatable")
}

// load reads, merges and validates the values, and takes out the
// credentials given as values. Any problem is a usage error: nothing has
// been sent to the cluster yet.
func (v *valuesFlags) load(f *command.Factory) (map[string]any, *render.Identity, *render.Webhook, error) {
	values, err := render.LoadValues(render.ValueSources{Files: v.files, Set: v.set, SetString: v.setString, SetFile: v.setFile, ReadFile: f.ReadFile})
	if err != nil {
		return nil, nil, nil, command.Usage(err)
	}
	if err := render.ValidateValues(values); err != nil {
		return nil, nil, nil, command.Usage(err)
	}
	rest, id, wh, err := install.SplitCredentials(values)
	if err != nil {
		return nil, nil, nil, command.Usage(err)
	}
	return rest, id, wh, nil
}

// identityFlags name the user's identity CA files.
type identityFlags struct {
	anchors, issuerCert, issuerKey string
}

func (i *identityFlags) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&i.anchors, "identity-trust-anchors-file", "", "PEM file of the trust anchors (root CAs); default: generate a new CA")
	fs.StringVar(&i.issuerCert, "identity-issuer-certificate-file", "", "PEM file of the issuer certificate, signed by a trust anchor")
	fs.StringVar(&i.issuerKey, "identity-issuer-key-file", "", "PEM file of the issuer's private key")
}

// load returns the user's CA, or nil when no file was named.
func (i *identityFlags) load(f *command.Factory) (*render.Identity, error) {
	names := []string{i.anchors, i.issuerCert, i.issuerKey}
	flags := []string{"--identity-trust-anchors-file", "--identity-issuer-certificate-file", "--identity-issuer-key-file"}
	var given int
	for _, n := range names {
		if n != "" {
			given++
		}
	}
	if given == 0 {
		return nil, nil
	}
	if given < len(names) {
		return nil, command.UsageErrorf("%s, %s and %s go together: give all three or none", flags[0], flags[1], flags[2])
	}
	var data [3][]byte
	for j, n := range names {
		b, err := f.ReadFile(n)
		if err != nil {
			return nil, command.UsageErrorf("reading %s: %v", flags[j], err)
		}
		data[j] = b
	}
	id, err := install.LoadIdentityFiles(data[0], data[1], data[2])
	if err != nil {
		return nil, command.Usage(fmt.Errorf("checking the identity files %s, %s and %s: %w", names[0], names[1], names[2], err))
	}
	return &id, nil
}

// checkMeshNamespace refuses, before anything is sent to a cluster, a
// namespace the mesh must not be installed into.
func checkMeshNamespace(ns string) error {
	if err := install.CheckMeshNamespace(ns); err != nil {
		return command.Usage(fmt.Errorf("invalid --mesh-namespace: %w", err))
	}
	return nil
}

// lifecycleError maps the install library's failures to exit codes and adds
// what the user can do about them.
func lifecycleError(verb string, err error) error {
	var already *install.AlreadyInstalledError
	var partial *install.PartialError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &already):
		return command.Refused(fmt.Errorf("%w\nrun `meshctl upgrade` to change or update it, or `meshctl uninstall` first", err))
	case errors.Is(err, install.ErrNotInstalled):
		return command.Refused(fmt.Errorf("%w in this namespace: run `meshctl install` first, or name the namespace with --mesh-namespace", err))
	case install.IsTimeout(err):
		return command.Timeout(fmt.Errorf("%w\neverything was applied; run `meshctl check` to follow the control plane's health", err))
	case errors.As(err, &partial):
		return fmt.Errorf("%w\nfix the cause and run `meshctl %s` again to finish, or `meshctl uninstall` to remove what was applied", err, verb)
	}
	var invalid *render.InvalidValuesError
	var badNamespace *install.NamespaceError
	if errors.As(err, &invalid) || errors.As(err, &badNamespace) {
		return command.Usage(err)
	}
	return err
}
