#!/usr/bin/env python3
"""Scale benchmark driver for benches/scale.sh (standard library only).

`scale.py load-and-measure`: uploads images START..N (tiny distinct PNGs with user metadata
`n`, `int:n`, `tag`, `array:labels`) with 4 keep-alive client threads, prints the upload rate
per decile, then p50/p99 of REPEAT sequential requests per listing form, single-record reads,
/readyz and stats, an exactness check of a full cursor walk, and the server's RSS.
`scale.py delete`: deletes 10 % of the images (4 threads).
Environment: API (host:port), KEY, N, START (0), REPEAT (50), DARKROOM_PID.
"""
import os
import sys
import json, zlib, struct, time, threading, http.client

host, api_port = os.environ["API"].split(":")
api_port = int(api_port)
key = os.environ["KEY"]
N = int(os.environ["N"])
REPEAT = int(os.environ.get("REPEAT", "50"))


def delete():
    c=http.client.HTTPConnection('127.0.0.1',api_port)
    hs=[];cur=''
    while len(hs)<max(1, N//10):
        c.request('GET','/sourceimages/acme?limit=2000&sort=size%20asc'+('&offset='+cur if cur else ''),headers={'Api-Key':key}); v=json.loads(c.getresponse().read())
        hs+=[i['hash'] for i in v['items']]; cur=v['cursor']
    hs=hs[:max(1, N//10)]; lock=threading.Lock(); t0=time.time()
    def w():
        cc=http.client.HTTPConnection('127.0.0.1',api_port)
        while True:
            with lock:
                if not hs: return
                h=hs.pop()
            cc.request('DELETE','/sourceimages/acme/'+h,headers={'Api-Key':key}); r=cc.getresponse(); r.read()
            if r.status!=204: print('del',r.status)
    ts=[threading.Thread(target=w) for _ in range(4)]; [t.start() for t in ts]; [t.join() for t in ts]
    print('deleted images in %.1fs'%(time.time()-t0))


def load_and_measure():
    pid = int(os.environ["DARKROOM_PID"])
    def png(i):
        w=4+(i%5); h=3
        raw=b''.join(b'\x00'+bytes(((x*7+y+i*31)%256) for x in range(w*3))+b'' for y in range(h))
        raw=raw[:-3]+struct.pack('>I',i)[1:]
        def chunk(t,d): return struct.pack('>I',len(d))+t+d+struct.pack('>I',zlib.crc32(t+d)&0xffffffff)
        return b'\x89PNG\r\n\x1a\n'+chunk(b'IHDR',struct.pack('>IIBBBBB',w,h,8,2,0,0,0))+chunk(b'IDAT',zlib.compress(raw))+chunk(b'IEND',b'')
    def body(i):
        b='XyZb'
        meta=json.dumps({"n":str(i),"int:n":i,"tag":"t%d"%(i%100),"array:labels":["l%d"%(i%7),"l%d"%(i%11)]})
        return b,(('--%s\r\nContent-Disposition: form-data; name="filedata"; filename="img%d.png"\r\nContent-Type: image/png\r\n\r\n'%(b,i)).encode()+png(i)+b'\r\n'+('--%s\r\nContent-Disposition: form-data; name="meta_user[0]"\r\n\r\n%s\r\n--%s--\r\n'%(b,meta,b)).encode())
    def rss():
        d={}
        for l in open('/proc/%d/status'%pid):
            if l.startswith(('VmRSS','VmHWM')): d[l.split(':')[0]]=int(l.split()[1])//1024
        return d
    start=int(os.environ.get('START','0'))
    if N>start:
        done=[0]*10; t0=time.time(); lock=threading.Lock(); nxt=[start]; dec_t=[None]*10
        def worker():
            c=http.client.HTTPConnection('127.0.0.1',api_port)
            while True:
                with lock:
                    i=nxt[0]; nxt[0]+=1
                if i>=N: return
                b,data=body(i)
                c.request('POST','/sourceimages/acme',data,{'Api-Key':key,'Content-Type':'multipart/form-data; boundary='+b})
                r=c.getresponse(); r.read()
                if r.status!=200: print('upload',i,r.status)
                d=(i-start)*10//(N-start)
                with lock:
                    done[d]+=1
                    if done[d]==(N-start)//10: dec_t[d]=time.time()
        ts=[threading.Thread(target=worker) for _ in range(4)]
        [t.start() for t in ts]; [t.join() for t in ts]
        prev=t0; rates=[]
        for t in dec_t:
            if t: rates.append(round((N-start)/10/(t-prev))); prev=t
        print('upload rate per decile (img/s):',rates, 'total %.1fs'%(time.time()-t0))
    print('rss after load', rss())
    c=http.client.HTTPConnection('127.0.0.1',api_port)
    def get(path):
        t=time.perf_counter(); c.request('GET',path,headers={'Api-Key':key}); r=c.getresponse(); b=r.read(); return (time.perf_counter()-t)*1000, r.status, b
    def fig(name,path,rep=None):
        rep=rep or REPEAT
        ts=[];st=set()
        for _ in range(rep):
            ms,s,b=get(path); ts.append(ms); st.add(s)
        ts.sort(); print('%-34s p50 %7.1f  p99 %7.1f ms  status %s %s'%(name,ts[len(ts)//2],ts[min(len(ts)-1,int(len(ts)*0.99))],sorted(st), (json.loads(b).get('error',{}).get('message','')[:60] if 400<=max(st)<500 else '')))
        return b
    q='/sourceimages/acme?'
    b=fig('default',q)
    h=json.loads(b)['items'][0]
    for name,qs in [('sort=size desc','sort=size%20desc'),('sort=created asc','sort=created%20asc'),('sort=name asc','sort=name'),('sort=width desc','sort=width%20desc'),('sort=user:int:n desc','sort=user:int:n%20desc'),
      ('offset=100','offset=100'),('offset=10000','offset=10000'),('offset=N/2','offset=%d'%(N//2)),('user:str:tag=t42','user:str:tag=t42'),('user:int:n=[1000,2000]','user:int:n=%5B1000,2000%5D'),
      ('user:array:labels=l3','user:array:labels=l3'),('size=[100,200]','size=%5B100,200%5D'),('name=img1*','name=img1*'),('format=png','format=png'),('tag=t42&labels=l3','user:str:tag=t42&user:array:labels=l3'),
      ('facets=user:array:labels','facets=user:array:labels'),('limit=0','limit=0'),('sort=size desc&tag=t42','sort=size%20desc&user:str:tag=t42'),('sort=name&format=png','sort=name&format=png')]:
        fig(name,q+qs)
    fig('GET by hash','/sourceimages/acme/'+h['hash'])
    fig('GET by short hash','/sourceimages/acme/'+h['short_hash'])
    fig('binaryHash',q+'binaryHash='+h['binary_hash'])
    fig('/readyz','/readyz'); fig('/stats','/stats/acme')
    # cursor walk exactness + per-page timing
    seen=[];cur='';pt=[]
    while True:
        ms,s,b=get(q+'limit=2000'+('&offset='+cur if cur else '')); v=json.loads(b); pt.append(ms)
        seen+= [i['hash'] for i in v['items']]
        if len(v['items'])<2000: break
        cur=v['cursor']
    pt.sort()
    print('cursor walk: %d items, %d duplicates, %d missing (of %d); page(2000) p50 %.1f p99 %.1f ms'%(len(seen),len(seen)-len(set(seen)),N-len(set(seen)),N,pt[len(pt)//2],pt[-1]))
    ms=[]; cur=''
    for k in range(100):
        t,s,b=get(q+'limit=100&sort=size%20desc'+('&offset='+cur if cur else '')); ms.append(t); cur=json.loads(b).get('cursor','')
    ms.sort(); print('cursor pages limit=100 sort=size desc: p50 %.1f p99 %.1f ms'%(ms[50],ms[99]))
    print('rss after listings', rss())



if __name__ == "__main__":
    {"delete": delete, "load-and-measure": load_and_measure}[sys.argv[1]]()
