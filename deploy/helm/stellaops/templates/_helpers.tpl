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
