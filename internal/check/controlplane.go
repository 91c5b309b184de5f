package check

import (
	"context"
	"errors"
	"fmt"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshctl/mesh/internal/meshconfig"
	"github.com/meshctl/mesh/internal/version"
	"github.com/meshctl/mesh/internal/wellknown"
)

func existence() Category {
	return Category{ID: CategoryExistence, Checks: []Check{
		{
			Description: "the control-plane namespace exists",
			Hint:        "cp-namespace",
			Severity:    Fatal,
			Run:         checkNamespace,
		},
		{
			Description: "the MeshConfig CRD is installed and established",
			Hint:        "cp-crd",
			Severity:    Fatal,
			Run:         checkCRD,
		},
		{
			Description: "the MeshConfig is present and valid",
			Hint:        "cp-meshconfig",
			Run:         checkMeshConfig,
		},
		{
			Description: "the controller's RBAC objects exist",
			Hint:        "cp-rbac",
			Run:         requireObjects(controllerRBAC),
		},
		{
			Description: "the controller's Deployment and Service exist",
			Hint:        "cp-workload",
			Run:         requireObjects(controllerWorkload),
		},
		{
			Description: "the injection webhook is configured",
			Hint:        "cp-webhook-config",
			Run:         checkWebhookConfiguration,
		},
		{
			Description: "the installation is complete",
			Hint:        "cp-installation",
			Run:         checkInstallation,
		},
		{
			Description: "the control plane runs this meshctl's version",
			Hint:        "cp-version",
			Severity:    Warning,
			Run:         checkVersion,
		},
	}}
}

func checkNamespace(ctx context.Context, s *State) error {
	ns, err := s.kube.CoreV1().Namespaces().Get(ctx, s.cfg.Namespace, metav1.GetOptions{})
	switch {
	case isNotFound(err):
		return fmt.Errorf("namespace %s does not exist: the mesh is not installed there", s.cfg.Namespace)
	case err != nil:
		return fmt.Errorf("getting namespace %s: %w", s.cfg.Namespace, err)
	case ns.DeletionTimestamp != nil:
		return fmt.Errorf("namespace %s is being deleted", s.cfg.Namespace)
	}
	return nil
}

func checkCRD(ctx context.Context, s *State) error {
	u, err := s.object(ctx, crds, meshConfigCRDName)
	if err != nil {
		return err
	}
	crd, err := decode[apiextensionsv1.CustomResourceDefinition](u)
	if err != nil {
		return err
	}
	served := false
	for _, v := range crd.Spec.Versions {
		served = served || (v.Name == meshconfig.Version && v.Served)
	}
	if !served {
		return fmt.Errorf("CustomResourceDefinition %s does not serve version %s", crd.Name, meshconfig.Version)
	}
	for _, c := range crd.Status.Conditions {
		if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
			return nil
		}
	}
	return fmt.Errorf("CustomResourceDefinition %s is not established yet", crd.Name)
}

// meshConfig returns the control plane's MeshConfig.
func (s *State) meshConfig(ctx context.Context) (*meshconfig.MeshConfig, error) {
	u, err := s.object(ctx, meshConfigs, wellknown.MeshConfigName)
	if err != nil {
		return nil, err
	}
	return decode[meshconfig.MeshConfig](u)
}

func checkMeshConfig(ctx context.Context, s *State) error {
	mc, err := s.meshConfig(ctx)
	if err != nil {
		return err
	}
	if err := mc.Spec.Validate(); err != nil {
		return fmt.Errorf("MeshConfig %s/%s is invalid: %w", mc.Namespace, mc.Name, err)
	}
	return nil
}

// requireObjects returns a check that each of objs exists.
func requireObjects(objs []object) func(context.Context, *State) error {
	return func(ctx context.Context, s *State) error {
		var missing []string
		for _, o := range objs {
			_, err := s.object(ctx, o.resource, o.Name)
			var m *missingError
			switch {
			case errors.As(err, &m):
				missing = append(missing, o.describe(o.Name, s.cfg.Namespace))
			case err != nil:
				return err
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("missing (or lacking the label %s): %s", wellknown.LabelControlPlaneNamespace, strings.Join(missing, ", "))
		}
		return nil
	}
}

// checkWebhookConfiguration checks that the webhook configuration sends pods
// to the controller's Service and carries a CA bundle; whether that bundle
// matches the serving certificate is the webhook category's job.
func checkWebhookConfiguration(ctx context.Context, s *State) error {
	mwc, err := s.webhookConfiguration(ctx)
	if err != nil {
		return err
	}
	if len(mwc.Webhooks) == 0 {
		return fmt.Errorf("MutatingWebhookConfiguration %s has no webhooks", mwc.Name)
	}
	for _, w := range mwc.Webhooks {
		svc := w.ClientConfig.Service
		if svc == nil || svc.Name != wellknown.ControllerName || svc.Namespace != s.cfg.Namespace {
			return fmt.Errorf("webhook %s of MutatingWebhookConfiguration %s does not call Service %s/%s",
				w.Name, mwc.Name, s.cfg.Namespace, wellknown.ControllerName)
		}
		if len(w.ClientConfig.CABundle) == 0 {
			return fmt.Errorf("webhook %s of MutatingWebhookConfiguration %s has no caBundle", w.Name, mwc.Name)
		}
	}
	return nil
}

func (s *State) webhookConfiguration(ctx context.Context) (*admissionregistrationv1.MutatingWebhookConfiguration, error) {
	u, err := s.object(ctx, mutatingWebhooks, wellknown.WebhookName)
	if err != nil {
		return nil, err
	}
	return decode[admissionregistrationv1.MutatingWebhookConfiguration](u)
}

// checkInstallation reads the record that install writes last. It reads
// the Secret itself rather than through internal/install, so that install
// can run these checks for its own readiness report without an import cycle.
func checkInstallation(ctx context.Context, s *State) error {
	sec, err := s.kube.CoreV1().Secrets(s.cfg.Namespace).Get(ctx, wellknown.ValuesSecretName, metav1.GetOptions{})
	if isNotFound(err) {
		return fmt.Errorf("Secret %s/%s is missing: install did not finish, or the mesh was not installed by meshctl",
			s.cfg.Namespace, wellknown.ValuesSecretName)
	}
	if err != nil {
		return fmt.Errorf("reading the installation record: %w", err)
	}
	v := sec.Labels[wellknown.LabelVersion]
	if v == "" {
		return fmt.Errorf("Secret %s/%s has no label %s", sec.Namespace, sec.Name, wellknown.LabelVersion)
	}
	s.installedVersion = v
	return nil
}

// checkVersion compares the installation's version with meshctl's, and the
// version label of every object of the control plane with the
// installation's (meshctl's when the installation is unknown): they differ
// after an interrupted upgrade.
func checkVersion(ctx context.Context, s *State) error {
	want := version.LabelValue(s.cfg.Version)
	var problems []string
	ref := s.installedVersion
	switch {
	case ref == "":
		ref = want
	case ref != want:
		problems = append(problems, fmt.Sprintf("the control plane is %s and meshctl is %s: upgrade the control plane with this meshctl, or use meshctl %s",
			s.installedVersion, s.cfg.Version, s.installedVersion))
	}
	var others []string
	for _, r := range chartResources {
		if r == namespaces {
			continue
		}
		items, err := s.list(ctx, r)
		if err != nil {
			return err
		}
		for _, u := range items {
			if v := u.GetLabels()[wellknown.LabelVersion]; v != ref {
				others = append(others, fmt.Sprintf("%s (%s)", r.describe(u.GetName(), u.GetNamespace()), v))
			}
		}
	}
	if len(others) > 0 {
		const shown = 5
		more := ""
		if len(others) > shown {
			more = fmt.Sprintf(" and %d more", len(others)-shown)
			others = others[:shown]
		}
		problems = append(problems, fmt.Sprintf("objects of another version than %s: %s%s", ref, strings.Join(others, ", "), more))
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "\n"))
	}
	return nil
}
