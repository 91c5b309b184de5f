{{/*
mesh.version is the mesh version as a label value: the chart's appVersion
(meshctl sets it to its own version) with the characters a label value cannot
hold replaced.
*/}}
{{- define "mesh.version" -}}
{{- .Chart.AppVersion | replace "+" "_" | trunc 63 | trimSuffix "-" | trimSuffix "_" | trimSuffix "." -}}
{{- end -}}

{{/*
mesh.labels are the labels of every object the chart renders, cluster-scoped
ones included. Upgrade and uninstall find the mesh's objects by
meshctl.dev/control-plane-ns. Call with (dict "root" $ "component" "name").
*/}}
{{- define "mesh.labels" -}}
{{ include "mesh.selectorLabels" . }}
meshctl.dev/version: {{ include "mesh.version" .root | quote }}
app.kubernetes.io/part-of: meshctl
app.kubernetes.io/version: {{ include "mesh.version" .root | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}

{{/*
mesh.selectorLabels are the labels that select a component's pods. They never
carry the version: a Deployment's selector is immutable, and upgrades must not
change it.
*/}}
{{- define "mesh.selectorLabels" -}}
meshctl.dev/control-plane-ns: {{ .root.Release.Namespace }}
meshctl.dev/component: {{ .component }}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* mesh.image is the meshproxy image; the tag defaults to the mesh version. */}}
{{- define "mesh.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/*
mesh.controllerReplicas: highAvailability raises replicas to at least 3.
*/}}
{{- define "mesh.controllerReplicas" -}}
{{- $replicas := int .Values.controller.replicas -}}
{{- if and .Values.controller.highAvailability (lt $replicas 3) -}}
{{- $replicas = 3 -}}
{{- end -}}
{{- $replicas -}}
{{- end -}}

{{/*
mesh.credential returns a credential value or fails naming it. meshctl always
fills them; with helm, pass them with --set-file.
Call with (list $ "identity.trustAnchorsPEM").
*/}}
{{- define "mesh.credential" -}}
{{- $root := index . 0 -}}
{{- $key := index . 1 -}}
{{- $value := $root.Values -}}
{{- range splitList "." $key -}}
{{- $value = index $value . -}}
{{- end -}}
{{- if not $value -}}
{{- fail (printf "value %s is required: meshctl generates it; with helm, pass it with --set-file %s=<file.pem>" $key $key) -}}
{{- end -}}
{{- $value -}}
{{- end -}}
