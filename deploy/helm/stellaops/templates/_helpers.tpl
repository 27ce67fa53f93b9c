{{/* Common labels. */}}
{{- define "stellaops.labels" -}}
app.kubernetes.io/part-of: stellaops-mirror
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "stellaops.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{/* Pods that read the mirror's configuration roll when it changes (a new ReplicaSet re-reads the ConfigMap). */}}
{{- define "stellaops.configChecksum" -}}
checksum/mirror-env: {{ toYaml .Values.env | sha256sum }}
{{- end -}}
