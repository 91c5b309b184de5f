package lifecycle

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshctl/mesh/internal/cli/command"
	"github.com/meshctl/mesh/internal/cli/ui"
	"github.com/meshctl/mesh/internal/install"
	"github.com/meshctl/mesh/internal/version"
	"github.com/meshctl/mesh/internal/wellknown"
)

// InstallOptions are the flags of `meshctl install`.
type InstallOptions struct {
	Factory  *command.Factory
	DryRun   bool
	Output   string
	Wait     time.Duration
	values   valuesFlags
	identity identityFlags
}

// NewInstallCmd returns `meshctl install`; runF replaces the run function in
// tests.
func NewInstallCmd(f *command.Factory, runF func(context.Context, *InstallOptions) error) *cobra.Command {
	opts := &InstallOptions{Factory: f}
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install the mesh's control plane",
		Long: `Install the mesh's control plane into --mesh-namespace.

meshctl renders its embedded Helm chart with your values, applies the result
with server-side apply (CRDs first, once they are established), records your
values in the cluster for later upgrades, and waits until the control plane
is ready, saying which pod is not ready and why.

Unless you give an identity CA, install generates one: an ECDSA P-256 trust
anchor valid for 10 years and an issuer valid for 1 year, signed by it.

With --dry-run nothing is sent to a cluster: the manifests are printed.`,
		Example: `  # Install with defaults and wait for readiness
  meshctl install

  # Review what would be applied, or hand it to GitOps
  meshctl install --dry-run > mesh.yaml

  # High availability and your own CA
  meshctl install --set controller.highAvailability=true \
    --identity-trust-anchors-file ca.crt \
    --identity-issuer-certificate-file issuer.crt \
    --identity-issuer-key-file issuer.key`,
		Args: command.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.Output != "" && !opts.DryRun {
				return command.UsageErrorf("--output applies only with --dry-run")
			}
			if err := command.ValidateOutput(opts.Output, "yaml", "json"); err != nil {
				return err
			}
			if err := checkReadinessWait(opts.Wait); err != nil {
				return err
			}
			if err := checkMeshNamespace(f.MeshNamespace); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return RunInstall(cmd.Context(), opts)
		},
	}
	fs := cmd.Flags()
	fs.BoolVar(&opts.DryRun, "dry-run", false, "print the manifests instead of applying them; no cluster is contacted")
	fs.StringVarP(&opts.Output, "output", "o", "", "format of --dry-run output: yaml (default) or json")
	_ = cmd.RegisterFlagCompletionFunc("output", command.CompleteChoices("yaml", "json"))
	addReadinessWait(fs, &opts.Wait)
	opts.values.addFlags(fs)
	opts.identity.addFlags(fs)
	f.AddMeshNamespaceFlag(cmd)
	f.AddClusterFlags(cmd)
	return cmd
}

// RunInstall installs, or prints the manifests with --dry-run.
func RunInstall(ctx context.Context, opts *InstallOptions) error {
	f := opts.Factory
	values, id, wh, err := opts.values.load(f)
	if err != nil {
		return err
	}
	fileID, err := opts.identity.load(f)
	if err != nil {
		return err
	}
	if fileID != nil {
		if id != nil {
			return command.UsageErrorf("the identity CA is given twice: by --identity-*-file flags and by identity.* values")
		}
		id = fileID
	}
	iopts := install.Options{
		Namespace: f.MeshNamespace,
		Values:    values,
		Identity:  id,
		Webhook:   wh,
		Version:   version.Get().Version,
		Wait:      opts.Wait,
		Observer:  progress(f.Streams),
	}
	if opts.DryRun {
		m, err := install.RenderOffline(iopts, "")
		if err != nil {
			return lifecycleError("install", err)
		}
		if w := install.DevelopmentImageWarning(m); w != "" {
			iopts.Observer(install.Event{Type: install.EventWarning, Message: w})
		}
		out := m.YAML()
		if opts.Output == "json" {
			out = m.JSON()
		}
		_, err = f.Streams.Out.Write(out)
		return err
	}
	c, err := clients(f)
	if err != nil {
		return err
	}
	if _, err := install.Install(ctx, c, iopts); err != nil {
		return lifecycleError("install", err)
	}
	p := ui.New(f.Streams.ErrOut, f.Streams.Colour && f.Streams.ErrOutIsTerminal)
	p.Println(p.OK("the mesh " + iopts.Version + " is installed in namespace " + f.MeshNamespace))
	p.Println(p.Faint("next: `meshctl check` to verify it, then `meshctl inject` workloads or label a namespace " + wellknown.LabelInject + "=" + wellknown.InjectEnabled))
	return nil
}

// clients connects to the cluster named by the kube flags.
func clients(f *command.Factory) (*install.Clients, error) {
	kube, err := f.Clientset()
	if err != nil {
		return nil, err
	}
	dyn, err := f.Dynamic()
	if err != nil {
		return nil, err
	}
	mapper, err := f.RESTMapper()
	if err != nil {
		return nil, err
	}
	return &install.Clients{Kube: kube, Dynamic: dyn, Mapper: mapper}, nil
}
