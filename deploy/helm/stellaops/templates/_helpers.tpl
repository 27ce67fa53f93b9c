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

{{/* Where the servers are reached in the release: the gateway proxies to them, and a server running one product
     asks the other's for its part of /status. Set by the chart (over the ConfigMap), as its Services decide it. */}}
{{- define "stellaops.upstreams" -}}
- name: MIRROR__GATEWAY__UPSTREAMS__CONCELIER
  value: stellaops-concelier:8080
- name: MIRROR__GATEWAY__UPSTREAMS__EXCITITOR
  value: stellaops-excititor:8080
{{- end -}}
