{{- define "safeattach.name" -}}safeattach-daemon{{- end -}}

{{- define "safeattach.labels" -}}
app.kubernetes.io/name: {{ include "safeattach.name" . }}
{{- end -}}

{{- define "safeattach.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}
