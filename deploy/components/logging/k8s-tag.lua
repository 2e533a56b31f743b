-- The tail input tags records kube.var.log.containers.<pod>_<namespace>_<container>-<id>.log
function add_k8s_fields(tag, timestamp, record)
  local file = string.match(tag, "containers%.(.+)$")
  if file == nil then
    return 0, timestamp, record
  end
  local pod, ns, container = string.match(file, "^([^_]+)_([^_]+)_(.+)%-%x+%.log$")
  if pod ~= nil then
    record["k8s_namespace"] = ns
    record["k8s_pod"] = pod
    record["k8s_container"] = container
  end
  return 1, timestamp, record
end
