#!/usr/bin/env python3
"""Derives the synthetic fixtures from reports and agents captured from
live processes (safeattach inspect --json): each one changes exactly the
fact a rule tests, for the combinations this machine cannot produce
(OpenJ9, musl, aarch64, another user...). Run from conflicts/testdata."""
import json, copy
R='reports/'; A='agents/'
def load(p): return json.load(open(p))
def save(p, d):
    with open(p,'w') as f:
        json.dump(d, f, indent=2); f.write('\n')
plain=load(R+'plain-jdk17.json')
def variant(name, edit, base=None):
    d=copy.deepcopy(base or plain); edit(d); save(R+name+'.json', d)
def nosock(d): d['jvm']['attach_socket']={'path':d['jvm']['attach_socket']['path'],'exists':False}
variant('xrs-socket-deleted', nosock, load(R+'xrs.json'))
def openj9(d):
    d['jvm']['kind']='openj9'; d['jvm']['libjvm']='/opt/openj9/lib/default/libj9vm29.so'; d['jvm']['evidence']=['maps /opt/openj9/lib/default/libj9vm29.so']
variant('openj9', openj9)
variant('musl-target', lambda d: d['process'].update(libc='musl'))
variant('other-async-profiler-loaded', lambda d: d.update(profilers=[{'role':'async-profiler','kind':'async-profiler','path':'/opt/vendor/lib/libvendorprof.so','version':'2.9'}]))
variant('yourkit-loaded', lambda d: d.update(profilers=[{'role':'profiler','kind':'yourkit','path':'/opt/yjp/libyjpagent.so'}]))
variant('many-libraries', lambda d: d.update(mapped_elfs=3000))
variant('foreign-user', lambda d: d.update(inspector={'euid':1000,'egid':1000}))
variant('spoofed-socket', lambda d: d['jvm']['attach_socket'].update(exists=True, is_socket=True, uid=1234, mode='0666'))
variant('jdk8', lambda d: d['jvm'].update(version='1.8.0_412', feature=8))
variant('jdk21', lambda d: d['jvm'].update(version='21.0.5', feature=21))
# The Flight Recorder's rules: its availability and its hazards by version.
variant('jdk8-252', lambda d: d['jvm'].update(version='1.8.0_252', feature=8))
variant('jdk8-265', lambda d: d['jvm'].update(version='1.8.0_265', feature=8))
variant('jdk11-0-3', lambda d: d['jvm'].update(version='11.0.3', feature=11))
def jfr_off(d):
    d['process']['cmdline'].insert(1, '-XX:-FlightRecorder')
    d['jvm'].setdefault('flags', {})['FlightRecorder']={'value':'false','source':'cmdline'}
variant('jfr-disabled', jfr_off)
jdk25=lambda d: d['jvm'].update(version='25.0.3', feature=25)
variant('tcmalloc-heapprofile-jdk25', jdk25, load(R+'tcmalloc-heapprofile.json'))
variant('jemalloc-libunwind-active-jdk25', jdk25, load(R+'jemalloc-libunwind-active.json'))
variant('jemalloc-prof-active-jdk25', jdk25, load(R+'jemalloc-prof-active.json'))
variant('sigprof-taken', lambda d: d['process']['signals']['sigprof'].update(caught=True))
def unreadable_env(j):
    reason='open /proc/1/environ: permission denied'
    j['jemalloc']['prof']={'state':'unknown','sources':[{'name':'malloc_conf symbol','set':False},{'name':'/etc/malloc.conf','set':False},{'name':'MALLOC_CONF','set':False,'error':reason}],'reason':'prof may be set by a source that could not be read: MALLOC_CONF: '+reason}
    j['unknowns']=[{'fact':'process.environ','reason':reason},{'fact':'jemalloc.prof.state','reason':j['jemalloc']['prof']['reason']}]
variant('jemalloc-environ-unreadable', unreadable_env, load(R+'jemalloc-prof-active.json'))

af=load(A+'lookalike_affected.json')
def agent(name, edit, base=af):
    d=copy.deepcopy(base); edit(d); save(A+name+'.json', d)
def unversioned(a):
    a['version']=''; a['version_reason']='no bare version literal in read-only data'; a['evidence']=a['evidence'][:-1]
agent('async-profiler-unversioned', unversioned)
def release30(a): a.update(version='3.0', imports=['malloc'], imports_dl_iterate_phdr=False)
agent('async-profiler-3.0-release', release30)
agent('async-profiler-4.0-nativemem', lambda a: a.update(version='4.0', options='start,event=cpu,nativemem=1m'))
agent('async-profiler-4.2-jfrsync', lambda a: a.update(version='4.2', options='start,jfrsync=profile'))
agent('async-profiler-3.0-alloc', lambda a: (release30(a), a.update(options='start,event=alloc')))
agent('async-profiler-aarch64', lambda a: a.update(machine='aarch64'))
agent('datadog-1.20', lambda a: a.update(kind='datadog-java-profiler', version='1.20.0', path='/opt/dd/libjavaProfiler.so', real_path='/opt/dd/libjavaProfiler.so'))
fixed=load(A+'lookalike_fixed.json')
agent('world-writable', lambda a: a.update(writable_by=[{'kind':'everyone','path':a['path']}]), fixed)
